"""A live server for the AuthZEN tests, and the certification scenario's fixture written
through the public APIs (SCIM for people and groups, /api/v1 for connectors and mappings)
as ordinary data of the model."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from werkzeug.serving import make_server

from provisioning.audit.log import Origin, Source
from provisioning.tokens import credentials
from tests.api.conftest import make_app

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
SCIM_JSON = {"Content-Type": "application/scim+json"}


@dataclass
class Live:
    """The service on 127.0.0.1, and sessions for an enforcement point and an admin."""

    base: str
    pep: requests.Session
    admin: requests.Session
    scim: requests.Session
    database: Any
    app: Any

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.pep.post(self.base + path, json=body, timeout=10, **kwargs)

    def admin_post(self, path: str, body: Any) -> Any:
        response = self.admin.post(self.base + "/api/v1" + path, json=body, timeout=10)
        assert response.status_code in (200, 201), (path, response.text)
        return response.json()

    def scim_post(self, path: str, body: Any) -> Any:
        response = self.scim.post(
            self.base + "/scim/v2" + path, json=body, headers=SCIM_JSON, timeout=10
        )
        assert response.status_code == 201, (path, response.text)
        return response.json()


def _session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def serve(database: Any, issuer: Any, **settings: Any) -> Iterator[Live]:
    app = make_app(database, issuer, **settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = Origin("test", Source.CLI)
    with database.transaction() as session:
        pep = credentials.create(session, "gateway", ["decisions:check"], origin)
        admin = credentials.create(session, "admin", ["admin:read", "admin:write"], origin)
        scim = credentials.create(session, "okta", ["scim:provision"], origin)
    try:
        yield Live(
            f"http://127.0.0.1:{server.server_port}",
            _session(pep),
            _session(admin),
            _session(scim),
            database,
            app,
        )
    finally:
        server.shutdown()
        server.server_close()


def person(live: Live, user_name: str) -> str:
    email = user_name if "@" in user_name else f"{user_name}@example.com"
    body = {
        "schemas": [USER],
        "userName": user_name,
        "externalId": f"00u{user_name.partition('@')[0]}",
        "emails": [{"primary": True, "value": email, "type": "work"}],
        "active": True,
    }
    return live.scim_post("/Users", body)["id"]


def group(live: Live, name: str, members: list[str]) -> str:
    body = {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
    return live.scim_post("/Groups", body)["id"]


def record(live: Live, slug: str) -> None:
    live.admin_post(
        "/connectors",
        {
            "slug": slug,
            "name": f"Record {slug}",
            "kind": "remote",
            "capability": "read_write",
            "publisher": "internal",
            "interfaces": ["web", "desktop", "code", "mobile"],
            "security_review": "approved",
            "resource_uri": f"https://records.example/mcp/{slug}",
            "resource_type": "record",
            "enabled": True,
        },
    )
    for name, kind, policy in (
        ("read", "read", "always_allow"),
        ("write", "write", "always_allow"),
        ("delete", "write", "needs_approval"),
    ):
        live.admin_post(
            f"/connectors/{slug}/actions", {"name": name, "kind": kind, "org_policy": policy}
        )


def certification_fixture(live: Live) -> dict[str, str]:
    """Users alice and bob, resources record-1 and record-2 of type ``record`` (two
    connectors), actions read and write: alice's group may read and write record-1, bob's
    may read it; both may read record-2. Returns the people's ids by userName."""
    ids = {name: person(live, name) for name in ("alice", "bob")}
    writers = group(live, "record-writers", [ids["alice"]])
    readers = group(live, "record-readers", [ids["bob"]])
    for slug in ("record-1", "record-2"):
        record(live, slug)
    for group_id, slug, level in (
        (writers, "record-1", "read_write"),
        (readers, "record-1", "read"),
        (writers, "record-2", "read"),
        (readers, "record-2", "read"),
    ):
        live.admin_post(
            "/mappings", {"group_id": group_id, "connector": slug, "access_level": level}
        )
    return ids
