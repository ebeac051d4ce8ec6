"""Authentication of /api/v1: JWT access tokens against a JWKS over HTTP, and static tokens."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from provisioning.audit.log import Origin, Source
from provisioning.audit.models import AuditEvent
from provisioning.tokens import credentials
from tests.api.conftest import Issuer

LIST = "/api/v1/connectors"


def call(api, token: str | None, path: str = LIST):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.client.get(path, headers=headers)


def assert_refused(response, status: int, error: str | None = None) -> None:
    assert response.status_code == status, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == status
    assert response.json["type"].startswith("urn:provisioning:problem:")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="provisioning"')
    if error:
        assert f'error="{error}"' in challenge


def test_a_valid_access_token_is_accepted(api, issuer):
    response = call(api, issuer.token(["admin:read"]))
    assert response.status_code == 200, response.json
    assert response.json == {"items": [], "next_cursor": None}


def test_okta_tokens_with_scp_and_cid_are_accepted(api, issuer):
    token = issuer.token(["admin:read"], okta=True)
    assert call(api, token).status_code == 200
    assert_refused(call(api, issuer.token(["audit:read"], okta=True)), 403, "insufficient_scope")


@pytest.mark.parametrize(
    "case",
    [
        "no credential",
        "garbage",
        "expired",
        "wrong issuer",
        "wrong audience",
        "bad signature",
        "unknown kid",
        "typed JWT",
        "no exp",
        "alg none",
        "unknown static token",
    ],
)
def test_bad_credentials_are_401(api, issuer: Issuer, case):
    now = int(time.time())
    tokens = {
        "no credential": None,
        "garbage": "not.a.token",
        "expired": issuer.token(["admin:read"], exp=now - 120, iat=now - 600),
        "wrong issuer": issuer.token(["admin:read"], iss="https://evil.test"),
        "wrong audience": issuer.token(["admin:read"], aud="api://other"),
        # Signed by a key whose public half the JWKS does not hold, under a published kid.
        "bad signature": issuer.token(["admin:read"], key=issuer.other, header={"kid": "key-1"}),
        "unknown kid": issuer.token(["admin:read"], key=issuer.other),
        "typed JWT": issuer.token(["admin:read"], header={"typ": "JWT"}),
        "no exp": issuer.token(["admin:read"], exp=None),
        "alg none": "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0.",
        "unknown static token": credentials.PREFIX + "x" * 43,
    }
    response = call(api, tokens[case])
    assert_refused(response, 401, None if case == "no credential" else "invalid_token")


def test_small_clock_skew_is_tolerated(api, issuer):
    now = int(time.time())
    assert call(api, issuer.token(["admin:read"], exp=now - 10)).status_code == 200
    assert call(api, issuer.token(["admin:read"], exp=now - 120)).status_code == 401


def test_missing_scope_is_403(api, issuer):
    response = call(api, issuer.token(["decisions:check"]))
    assert_refused(response, 403, "insufficient_scope")
    assert 'scope="admin:read"' in response.headers["WWW-Authenticate"]


def test_keys_are_cached_and_fetched_again_for_an_unknown_kid(api, issuer: Issuer):
    jwks = api.app.extensions["provisioning.api.jwks"]
    jwks.refetch_interval = 0
    before = issuer.fetches
    assert call(api, issuer.token(["admin:read"])).status_code == 200
    assert call(api, issuer.token(["admin:read"])).status_code == 200
    assert issuer.fetches == before + 1  # cached after the first fetch
    # The IdP rotates to a new key: the first token naming it makes us fetch again.
    issuer.published = [issuer.key, issuer.other]
    try:
        assert call(api, issuer.token(["admin:read"], key=issuer.other)).status_code == 200
        assert issuer.fetches == before + 2
    finally:
        issuer.published = [issuer.key]


def test_unknown_kid_refetches_at_most_once_per_interval(api, issuer: Issuer):
    jwks = api.app.extensions["provisioning.api.jwks"]
    assert call(api, issuer.token(["admin:read"])).status_code == 200
    before = issuer.fetches
    for _ in range(3):
        assert call(api, issuer.token(["admin:read"], key=issuer.other)).status_code == 401
    assert issuer.fetches == before
    assert jwks.refetch_interval > 0


def test_static_tokens_authenticate_and_revocation_is_immediate(api):
    secret = api.static_token("hr-system", ["admin:read"])
    assert call(api, secret).status_code == 200
    assert_refused(call(api, secret, "/api/v1/audit"), 403, "insufficient_scope")
    with api.database.transaction() as session:
        credentials.revoke(session, "hr-system", Origin("test", Source.CLI))
    assert_refused(call(api, secret), 401, "invalid_token")


def test_the_actor_is_recorded_on_every_audit_event(api, issuer):
    body = {
        "slug": "github",
        "name": "GitHub",
        "kind": "remote",
        "capability": "read_write",
        "publisher": "directory",
        "interfaces": ["web"],
    }
    token = issuer.token(["admin:write"], sub="grace@example.com")
    response = api.client.post(LIST, json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.json
    secret = api.static_token("terraform", ["admin:write"])
    response = api.client.post(
        f"{LIST}/github/actions",
        json={"name": "search", "kind": "read"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 201, response.json
    with api.database.reader() as session:
        events = session.execute(
            select(AuditEvent.action, AuditEvent.actor, AuditEvent.source).where(
                AuditEvent.action.in_(["connector.created", "action.created"])
            )
        ).all()
    assert sorted(events) == [
        ("action.created", "terraform", "admin"),
        ("connector.created", "grace@example.com", "admin"),
    ]


def test_jwts_are_refused_when_no_issuer_is_configured(database, issuer):
    from provisioning.settings import load
    from provisioning.web.app import create_app

    client = create_app(load(database_url=database.url), database).test_client()
    token = issuer.token(["admin:read"])
    response = client.get(LIST, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "not configured" in response.json["detail"]


def test_an_unknown_token_is_answered_as_unknown_whether_or_not_jwts_are_configured(api, database):
    from provisioning.settings import load
    from provisioning.web.app import create_app

    without_jwts = create_app(load(database_url=database.url), database).test_client()
    for client in (api.client, without_jwts):
        for token in ("s3cr3t-from-another-system", credentials.PREFIX + "x" * 43):
            response = client.get(LIST, headers={"Authorization": f"Bearer {token}"})
            assert_refused(response, 401, "invalid_token")
            assert response.json["detail"] == "unknown or revoked token"


def test_a_403_names_the_scope_the_token_lacks(api, issuer):
    secret = api.static_token("reader", ["admin:read"])
    refused = api.client.post(
        LIST, json={"slug": "x"}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert_refused(refused, 403, "insufficient_scope")
    assert "admin:write" in refused.json["detail"]
    refused = call(api, issuer.token(["decisions:check"]))
    assert "admin:read" in refused.json["detail"]
