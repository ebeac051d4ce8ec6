"""API tokens: only hashes stored, names validated, revocation immediate."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from provisioning.tokens import credentials
from provisioning.tokens.models import ApiToken


def test_secret_is_never_stored(database, origin):
    with database.transaction() as session:
        secret = credentials.create(session, "gateway", ["decisions:check"], origin)
    with database.reader() as session:
        token = session.scalar(select(ApiToken))
        assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert all(secret not in str(value) for value in vars(token).values())


@pytest.mark.parametrize(
    ("name", "scopes", "message"),
    [
        ("", ["admin:read"], "must be"),
        ("has space", ["admin:read"], "must be"),
        ("ok", [], "at least one"),
        ("ok", ["admin:everything"], "unknown scope admin:everything"),
    ],
)
def test_bad_token_requests_are_refused(database, origin, name, scopes, message):
    with pytest.raises(credentials.TokenError, match=message), database.transaction() as session:
        credentials.create(session, name, scopes, origin)
    with database.reader() as session:
        assert session.scalar(select(ApiToken)) is None


def test_two_tokens_have_different_secrets_and_principals(database, origin):
    with database.transaction() as session:
        a = credentials.create(session, "a", ["admin:read"], origin)
        b = credentials.create(session, "b", ["admin:write", "admin:read"], origin)
    assert a != b
    with database.reader() as session:
        assert credentials.authenticate(session, a).name == "a"
        assert credentials.authenticate(session, b).scopes == {"admin:read", "admin:write"}
        assert credentials.authenticate(session, "prov_guess") is None


def test_a_tokens_use_is_recorded_at_most_once_a_minute(database, origin):
    """Read on the hot path as the driver returns it, written only when a minute old."""
    import datetime as dt

    with database.transaction() as session:
        secret = credentials.create(session, "gw", ["decisions:check"], origin)

    def check() -> credentials.Principal:
        principal = database.hot_read(lambda c: credentials.authenticate(c, secret))
        assert principal is not None
        return principal

    assert check().last_used_at is None
    credentials.note_use(database, check())
    first = check().last_used_at
    assert first is not None and first.tzinfo is not None
    credentials.note_use(database, check())  # within the minute: not written
    assert check().last_used_at == first
    with database.reader() as session:
        assert session.scalar(select(ApiToken.last_used_at)) == first

    stale = credentials.Principal("gw", frozenset(), first - dt.timedelta(minutes=2))
    credentials.note_use(database, stale)
    assert check().last_used_at > first
