"""Fixtures for the SCIM tests: the real app on a migrated database, and a provisioning token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from provisioning.audit.log import Origin, Source
from provisioning.audit.models import AuditEvent
from provisioning.database import Database
from provisioning.settings import load
from provisioning.tokens import credentials
from provisioning.web.app import create_app

SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
TOKEN_NAME = "okta-provisioning"


@dataclass
class Scim:
    """A client of /scim/v2 with a valid provisioning token."""

    client: Any
    secret: str
    database: Database

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any):
        headers = kwargs.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {self.secret}")
        data = kwargs.pop("data", None)
        if body is not None:
            data = json.dumps(body)
        if data is not None:
            headers.setdefault("Content-Type", SCIM_JSON)
        return self.client.open(
            "/scim/v2" + path, method=method, data=data, headers=headers, **kwargs
        )

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any):
        return self.request("POST", path, body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any):
        return self.request("PUT", path, body, **kwargs)

    def patch(self, path: str, operations: list[dict[str, Any]], **kwargs: Any):
        return self.request(
            "PATCH", path, {"schemas": [PATCH_OP], "Operations": operations}, **kwargs
        )

    def delete(self, path: str, **kwargs: Any):
        return self.request("DELETE", path, **kwargs)

    def audit_count(self) -> int:
        with self.database.reader() as session:
            return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def make_app(database: Database, **settings: Any):
    return create_app(load(database_url=database.url, **settings), database)


def make_token(database: Database, name: str, scopes: list[str]) -> str:
    with database.transaction() as session:
        return credentials.create(session, name, scopes, Origin("test-admin", Source.CLI))


@pytest.fixture
def scim(database: Database) -> Iterator[Scim]:
    secret = make_token(database, TOKEN_NAME, ["scim:provision"])
    yield Scim(make_app(database).test_client(), secret, database)


def okta_user(user_name: str = "isabella.lopez@example.com", **extra: Any) -> dict[str, Any]:
    """A user as Okta's SCIM 2.0 client creates it (documented request shape)."""
    given, _, family = user_name.split("@")[0].partition(".")
    body = {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": given.title(), "familyName": family.title() or "Doe"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": f"{given.title()} {family.title()}".strip(),
        "locale": "en-US",
        "externalId": "00u" + user_name.split("@")[0].replace(".", "")[:14],
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }
    body.update(extra)
    return body
