"""Creating, revoking and checking static API tokens.

A secret is 256 random bits; only its SHA-256 is stored (a fast hash is
enough for a secret that cannot be guessed), and it is compared in constant
time. The secret is shown once, at creation.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.database import Database, Reader, connection_of, utcnow
from provisioning.hotpath import Prepared
from provisioning.identity import directory
from provisioning.identity.models import User
from provisioning.tokens.models import ApiToken

PREFIX = "prov_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")


class Scope(enum.StrEnum):
    SCIM_PROVISION = "scim:provision"
    ADMIN_READ = "admin:read"
    ADMIN_WRITE = "admin:write"
    OFFBOARDING_WRITE = "offboarding:write"
    DECISIONS_CHECK = "decisions:check"
    AUDIT_READ = "audit:read"
    # A person asks for access, decides as an approver, cancels their own request.
    REQUESTS_WRITE = "requests:write"


class TokenError(ValueError):
    """A token cannot be created or revoked as asked."""


@dataclass(frozen=True)
class Principal:
    """Who a valid credential speaks for, and what it may do."""

    name: str
    scopes: frozenset[str]
    # The token's recorded last use (None for a credential that is not a static token).
    last_used_at: dt.datetime | None = None

    def use_is_stale(self, now: dt.datetime) -> bool:
        """Whether the recorded last use is old enough to be written again."""
        return self.last_used_at is None or now - self.last_used_at >= USE_RESOLUTION


# A token's last use is recorded to this resolution: one write a minute, not one a call.
USE_RESOLUTION = dt.timedelta(minutes=1)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    session: Session,
    name: str,
    scopes: list[str],
    origin: Origin,
    *,
    person: uuid.UUID | None = None,
) -> str:
    """Store a new token named ``name``; return its secret (the only time it is seen).

    ``person``: the user it speaks for when it asks for access or decides (a token of a
    person's own tool); None for a service's token."""
    if not _NAME.match(name):
        raise TokenError(
            f"token name {name!r} must be 1-100 letters, digits or . _ : - (starting alphanumeric)"
        )
    if not scopes:
        raise TokenError("a token needs at least one --scope")
    unknown = sorted(set(scopes) - {s.value for s in Scope})
    if unknown:
        known = ", ".join(s.value for s in Scope)
        raise TokenError(f"unknown scope {', '.join(unknown)}; known scopes: {known}")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise TokenError(f"a token named {name!r} already exists (names are never reused)")
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name, secret_hash=_digest(secret), scopes=sorted(set(scopes)), user_id=person
    )
    session.add(token)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "token.created",
                "token",
                name,
                after={
                    "name": name,
                    "scopes": token.scopes,
                    **({"person": str(person)} if person else {}),
                },
            )
        ],
    )
    return secret


def bound_person(session: Session, name: str) -> uuid.UUID | None:
    """The user the token named ``name`` speaks for, if it is bound to one."""
    return session.scalar(select(ApiToken.user_id).where(ApiToken.name == name))


def person_of(session: Session, name: str) -> User | None:
    """The active person of the directory the token named ``name`` speaks for: the user it
    is bound to, if that user is active; None for a service's token (or a departed person)."""
    bound = bound_person(session, name)
    return directory.person(session, str(bound)) if bound is not None else None


def revoke(session: Session, name: str, origin: Origin) -> None:
    """Revoke the token named ``name`` at once."""
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None:
        raise TokenError(f"no token named {name!r}")
    if token.revoked_at is not None:
        raise TokenError(f"token {name!r} is already revoked")
    token.revoked_at = utcnow()
    record(session, origin, [Entry("token.revoked", "token", name, before={"name": name})])


# Checked on every API call: compiled once, run on the driver's cursor.
_BY_DIGEST = Prepared(
    select(
        ApiToken.name,
        ApiToken.scopes,
        ApiToken.secret_hash,
        ApiToken.revoked_at,
        ApiToken.last_used_at,
    ).where(ApiToken.secret_hash == bindparam("digest"))
)


def authenticate(reader: Reader, secret: str) -> Principal | None:
    """The principal of a live token whose secret is ``secret``, else None."""
    digest = _digest(secret)
    token = _BY_DIGEST.first(connection_of(reader), {"digest": digest})
    if token is None or token.revoked_at is not None:
        return None
    if not hmac.compare_digest(token.secret_hash, digest):
        return None
    last_used = token.last_used_at
    if isinstance(last_used, str):  # the raw SQLite driver returns the stored text
        last_used = dt.datetime.fromisoformat(last_used)
    if last_used is not None and last_used.tzinfo is None:
        last_used = last_used.replace(tzinfo=dt.UTC)
    return Principal(name=token.name, scopes=frozenset(token.scopes), last_used_at=last_used)


def note_use(database: Database, principal: Principal) -> None:
    """Record that ``principal``'s token authenticated a call now, unless its recorded use
    is under a minute old: every edge that takes a static token calls this."""
    now = utcnow()
    if principal.use_is_stale(now):
        with database.transaction() as session:
            session.execute(
                update(ApiToken).where(ApiToken.name == principal.name).values(last_used_at=now)
            )


@dataclass(frozen=True)
class Listed:
    """A token as an operator sees it: never its secret or its hash."""

    name: str
    scopes: list[str]
    person: str | None  # the bound person's userName
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


def listed(session: Session, *, revoked: bool = False) -> list[Listed]:
    """Every live token (and the revoked ones too if ``revoked``), by name."""
    query = (
        select(ApiToken, User.user_name)
        .outerjoin(User, User.id == ApiToken.user_id)
        .order_by(ApiToken.name)
    )
    if not revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return [
        Listed(
            name=token.name,
            scopes=list(token.scopes),
            person=user_name,
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )
        for token, user_name in session.execute(query)
    ]
