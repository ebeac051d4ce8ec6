"""The console's fixtures: a seeded organisation, an app with token and OIDC sign-in,
signed-in test clients, and a test IdP on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import http.client
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pytest
from sqlalchemy import select

from provisioning.audit.log import Origin, Source
from provisioning.database import utcnow
from provisioning.entitlements.mappings import create_mapping
from provisioning.reviews import campaigns
from provisioning.reviews.models import CampaignTrigger, NoResponse
from provisioning.settings import load
from provisioning.tokens import credentials
from provisioning.web.app import create_app
from tests.console.idp import CLIENT_ID, Provider
from tests.org import Org

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def idp() -> Iterator[Provider]:
    provider = Provider()
    yield provider
    provider.close()


@dataclass
class Seeded:
    ada: str  # user ids, as text
    bob: str
    mgr: str
    eng: str  # group id
    ops: str
    admin_token: str
    viewer_token: str


@pytest.fixture
def seeded(database, origin) -> Seeded:
    """Ada and Bob in eng (mapped to github), their manager, a pending third-party connector,
    an open review campaign (their manager reviews), and tokens for each console role."""
    with database.transaction() as session:
        org = Org(session, origin)
        mgr = org.user("mgr@example.com", display_name="Mona Manager")
        ada = org.user("ada@example.com", display_name="Ada Lovelace", manager_id=mgr.user_name)
        bob = org.user("bob@example.com", display_name="Bob Builder", manager_id=mgr.user_name)
        eng, ops = org.group("eng"), org.group("ops")
        for person in (ada, bob):
            org.join(person, eng)
        org.join(mgr, ops)
        github = org.connector(
            "github",
            actions=(
                ("read_repo", "read", "always_allow"),
                ("merge_pull_request", "write", "needs_approval"),
            ),
        )
        org.connector(
            "vendor-chat", publisher="third_party", security_review="pending", enabled=False
        )
        org.connector("wiki")
        create_mapping(session, origin, eng, github, "read_write")
        campaigns.create_campaign(
            session,
            origin,
            name="Quarterly review",
            trigger=CampaignTrigger.MANUAL,
            deadline=utcnow() + dt.timedelta(days=7),
            no_response=NoResponse.KEEP,
        )
        cli = Origin("test", Source.CLI)
        tokens = [
            credentials.create(session, name, scopes, cli)
            for name, scopes in (
                ("admin", ["admin:write"]),
                ("viewer", ["admin:read"]),
            )
        ]
        return Seeded(str(ada.id), str(bob.id), str(mgr.id), str(eng.id), str(ops.id), *tokens)


def console_settings(database: Any, idp: Provider, **overrides: Any) -> Any:
    return load(
        database_url=database.url,
        console_oidc_issuer=idp.issuer,
        console_oidc_client_id=CLIENT_ID,
        console_admin="admin:write,console-admins",
        console_reviewer="managers",
        console_viewer="admin:read,staff",
        **overrides,
    )


@pytest.fixture
def app(database, idp, seeded) -> Any:
    return create_app(console_settings(database, idp), database, background=False)


class Console:
    """A test client over https://localhost (the cookies are Secure), able to sign in."""

    def __init__(self, app: Any) -> None:
        self.client = app.test_client()
        self.base = "https://localhost"
        self.signed = False

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(self.base + path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kw):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.csrf())
        return self.client.post(self.base + path, data=data, **kw)

    def csrf(self) -> str:
        page = self.get("/console/people" if self.signed else "/console/sign-in")
        match = CSRF.search(page.get_data(as_text=True))
        assert match, "no CSRF token on the page"
        return match.group(1)

    def sign_in_oidc(self, idp: Provider, **person: Any) -> Any:
        """Through the IdP, as a browser would: to its authorization endpoint and back."""
        idp.person = person
        start = self.get("/console/sign-in/oidc")
        assert start.status_code == 302
        url = urlparse(start.headers["Location"])
        connection = http.client.HTTPConnection(url.netloc)
        connection.request("GET", f"{url.path}?{url.query}")
        response = connection.getresponse()
        assert response.status == 302, response.read()
        back = urlparse(response.getheader("Location"))
        answer = self.get(f"{back.path}?{back.query}")
        self.signed = answer.status_code == 302
        return answer

    def sign_in(self, token: str) -> Any:
        answer = self.post("/console/sign-in", {"token": token})
        self.signed = answer.status_code == 302
        return answer


@pytest.fixture
def console(app) -> Console:
    return Console(app)


@dataclass
class Asking:
    ada: str  # tokens bound to each person, scope requests:write
    bob: str
    mgr: str


@pytest.fixture
def asking(database, origin, seeded) -> Asking:
    """Wiki takes requests (their manager approves, up to 14 days); Ada, Bob and their
    manager each hold a token bound to them."""
    from provisioning.connectors.models import Connector
    from provisioning.requests import workflow

    with database.transaction() as session:
        wiki = session.scalar(select(Connector).where(Connector.slug == "wiki"))
        workflow.set_policy(
            session, origin, wiki, approvers=["manager"], max_days=14, decide_within_days=5
        )
        cli = Origin("test", Source.CLI)
        tokens = [
            credentials.create(
                session, f"{name}-cli", ["requests:write"], cli, person=uuid.UUID(user_id)
            )
            for name, user_id in (("ada", seeded.ada), ("bob", seeded.bob), ("mgr", seeded.mgr))
        ]
    return Asking(*tokens)
