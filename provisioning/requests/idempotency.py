"""Idempotency-Key on request submissions: the same key and an equivalent body answer the
request made the first time; the same key with another body is refused.

A key belongs to the credential that sent it (the same key from two credentials is two
keys) and is stored as a digest of both (``access_requests.idempotency_key``), beside a
digest of the body's canonical JSON (sorted keys, no whitespace). Keys are kept with
their requests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.requests.models import AccessRequest

MAX_KEY = 255
T = TypeVar("T")


class Reused(ValueError):
    """The key was used before with a body that is not equivalent to this one."""


def key(credential: str, value: str | None) -> str | None:
    """The stored form of an ``Idempotency-Key`` sent by ``credential`` (None: none sent)."""
    if value is None:
        return None
    return hashlib.sha256(f"{credential}\x00{value}".encode()).hexdigest()


def digest(document: Any) -> str:
    """What makes two bodies equivalent: SHA-256 of their canonical JSON."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def replayed(session: Session, stored: str | None, body: str | None) -> AccessRequest | None:
    """The request made before under this key with an equivalent body; None for a new key
    (or none); :class:`Reused` for another body."""
    if stored is None:
        return None
    earlier = session.scalar(select(AccessRequest).where(AccessRequest.idempotency_key == stored))
    if earlier is None:
        return None
    if earlier.idempotency_digest != body:
        raise Reused(
            "this Idempotency-Key was used with a different body: use a new key for a new request"
        )
    return earlier


RACES = ("ux_access_requests_idempotency_key", "ux_access_requests_binding_jti")
"""The unique indexes two racing submissions meet: one new key, or one denial's token."""
_RACED_COLUMNS = {
    ", ".join(f"{AccessRequest.__tablename__}.{column.name}" for column in index.columns)
    for index in AccessRequest.__table__.indexes
    if index.name in RACES
}


def raced(exc: IntegrityError) -> bool:
    """Whether ``exc`` is a unique index of :data:`RACES` refusing a second row: PostgreSQL
    names the index (psycopg's ``diag.constraint_name``), SQLite the columns."""
    diag = getattr(exc.orig, "diag", None)
    if diag is not None:
        return getattr(diag, "constraint_name", None) in RACES
    message = str(exc.orig)
    prefix = "UNIQUE constraint failed: "
    return message.startswith(prefix) and message[len(prefix) :] in _RACED_COLUMNS


def settled(attempt: Callable[[], T]) -> T:
    """Run ``attempt`` (a whole transaction), and once more if it lost a race at a unique
    index of :data:`RACES` (two submissions with one new key, or for one denial): the
    second time it finds the winner, and answers as a replay or refuses as a reuse. Any
    other integrity error is a defect, and propagates."""
    try:
        return attempt()
    except IntegrityError as exc:
        if not raced(exc):
            raise
        return attempt()


def record_replay(session: Session, origin: Origin, request: AccessRequest) -> None:
    """Audit a submission answered from its Idempotency-Key (nothing else changes)."""
    record(
        session,
        origin,
        [
            Entry(
                "request.replayed",
                "access_request",
                str(request.id),
                user_id=request.user_id,
                reason="the same Idempotency-Key and body",
            )
        ],
    )
