"""Signed checkpoints of the audit chain: its head, signed with Ed25519, for another system to hold.

A checkpoint is a compact JWS (RFC 7515; ``alg`` ``Ed25519``, RFC 9864's name
for EdDSA over Ed25519) whose payload is the chain head when it was taken::

    {"event_id": 1234, "hash": "<hex SHA-256>", "signed_at": "2026-11-24T10:00:00.000000Z"}

The database can refuse tampering only from those who cannot switch its
triggers off. A checkpoint held where the database's administrators cannot
write reaches further: ``audit.verify`` with the checkpoint's (event id, hash)
as an anchor fails if that event is gone or is not the one signed, so nothing
up to it can be cut or rewritten unseen. Keys are read with joserfc; nothing
here does cryptography by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.audit.log import lock
from provisioning.audit.models import GENESIS_HASH, AuditEvent
from provisioning.database import utcnow

ALGORITHM = "Ed25519"
TYPE = "audit-checkpoint"
_HASH = re.compile(r"^[0-9a-f]{64}$")


class InvalidKey(ValueError):
    """A key that is not an Ed25519 key in PEM or JWK form (the text never says the key)."""


class CheckpointError(Exception):
    """A checkpoint that cannot be trusted: malformed, or not signed by a given key."""


@dataclass(frozen=True)
class Checkpoint:
    """The chain head at a moment: its last event's id and hash."""

    event_id: int
    hash: str
    signed_at: dt.datetime
    key_id: str | None = None

    def claims(self) -> dict[str, Any]:
        signed_at = self.signed_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
        return {
            "event_id": self.event_id,
            "hash": self.hash,
            "signed_at": signed_at.replace("+00:00", "Z"),
        }


# -- keys -----------------------------------------------------------------------


def key_text(value: str) -> str:
    """The key itself: ``value`` when it is PEM or JWK, else the content of the file it names."""
    value = value.strip()
    if value.startswith(("-----", "{")):
        return value
    try:
        with open(value) as handle:
            return handle.read().strip()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or "not a path"
        raise InvalidKey(
            f"neither an Ed25519 key (PEM or JWK) nor a file holding one ({reason})"
        ) from None


def _import(text: str) -> OKPKey:
    try:
        source: Any = json.loads(text) if text.startswith("{") else text
        key = OKPKey.import_key(source)
    except (JoseError, ValueError, TypeError, KeyError):
        raise InvalidKey("not an Ed25519 key in PEM or JWK form") from None
    if key.curve_name != "Ed25519":
        raise InvalidKey(f"an {key.curve_name} key; an Ed25519 key is needed")
    return key


def private_key(text: str) -> OKPKey:
    """The signing key from PEM or JWK text; :class:`InvalidKey` unless an Ed25519 private key."""
    key = _import(key_text(text))
    if not key.is_private:
        raise InvalidKey("a public key; the private Ed25519 key is needed to sign")
    return key


def public_key(text: str) -> OKPKey:
    """A verifying key from PEM or JWK text or a file path (a private key gives its public half)."""
    key = _import(key_text(text))
    return OKPKey.import_key(key.as_dict(private=False)) if key.is_private else key


def public_jwk(key: OKPKey) -> dict[str, Any]:
    """The public half as a JWK, with its RFC 7638 thumbprint as ``kid``."""
    return {
        **key.as_dict(private=False),
        "kid": key.thumbprint(),
        "alg": ALGORITHM,
        "use": "sig",
    }


def public_pem(key: OKPKey) -> str:
    return key.as_pem(private=False).decode()


# -- taking, signing and reading ---------------------------------------------------


def take(session: Session) -> Checkpoint:
    """The chain head now, once it is seen to name the last event (id and hash).

    The head is locked as a writer locks it, so that no writer advances it between
    reading it and looking at the last event.
    """
    head = lock(session)
    if head.last_event_id == 0:
        named = GENESIS_HASH
    else:
        named = session.scalar(select(AuditEvent.hash).where(AuditEvent.id == head.last_event_id))
    last = session.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1)) or 0
    if named != head.last_hash or last != head.last_event_id:
        raise CheckpointError(
            f"the chain head (event {head.last_event_id}) is not the last event ({last}): "
            "run `provisioning audit verify`; nothing signed"
        )
    return Checkpoint(head.last_event_id, head.last_hash, utcnow())


def sign(checkpoint: Checkpoint, key: OKPKey) -> str:
    """The checkpoint as a compact JWS signed with ``key``."""
    header = {"alg": ALGORITHM, "kid": key.thumbprint(), "typ": TYPE}
    payload = json.dumps(checkpoint.claims(), separators=(",", ":"), sort_keys=True)
    return jws.serialize_compact(header, payload, key, algorithms=[ALGORITHM])


def read(token: str, keys: Sequence[OKPKey]) -> Checkpoint:
    """The checkpoint ``token`` carries, if one of ``keys`` signed it (else CheckpointError)."""
    token = token.strip()
    if token.count(".") != 2:
        raise CheckpointError("malformed: not a compact JWS")
    for key in keys:
        try:
            signed = jws.deserialize_compact(token, key, algorithms=[ALGORITHM])
        except JoseError:
            continue
        headers = signed.headers()
        if headers.get("typ") != TYPE:
            raise CheckpointError(f"malformed: signed, but not a checkpoint (typ {TYPE!r})")
        return _claims(signed.payload, headers.get("kid"))
    kids = ", ".join(k.thumbprint() for k in keys)
    raise CheckpointError(f"its signature does not verify with the public key ({kids})")


def _claims(payload: bytes, kid: Any) -> Checkpoint:
    try:
        claims = json.loads(payload)
        event_id, hash_, signed_at = claims["event_id"], claims["hash"], claims["signed_at"]
        when = dt.datetime.fromisoformat(signed_at)
    except (ValueError, KeyError, TypeError):
        raise CheckpointError("malformed: its payload is not a checkpoint") from None
    if (
        type(event_id) is not int
        or event_id < 0
        or not isinstance(hash_, str)
        or not _HASH.match(hash_)
        or when.tzinfo is None
    ):
        raise CheckpointError("malformed: its payload is not a checkpoint")
    return Checkpoint(event_id, hash_, when, kid if isinstance(kid, str) else None)
