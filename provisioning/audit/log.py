"""Writing, verifying and exporting the hash-chained audit log.

Each event's hash is SHA-256 over the previous event's hash and a canonical
JSON encoding of the event (sorted keys, no whitespace, UTF-8). An event made
by an HTTP request carries its request id (:mod:`provisioning.correlation`). Events are
appended under a lock on the chain head, in the same transaction as the
change they record, so a change and its audit event commit or vanish together.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from provisioning import correlation
from provisioning.audit.models import GENESIS_HASH, AuditChainHead, AuditEvent
from provisioning.database import chunked, utcnow
from provisioning.hotpath import Prepared, PreparedWrite


class Source(enum.StrEnum):
    """Through what a change arrived."""

    SCIM = "scim"
    OKTA_HOOK = "okta-hook"
    OKTA_SYNC = "okta-sync"
    ADMIN = "admin"
    HR = "hr"
    JOB = "job"
    CLI = "cli"


@dataclass(frozen=True)
class Origin:
    """Who made a change, through what, and why (a ticket, an event id)."""

    actor: str
    source: Source
    reason: str | None = None


@dataclass(frozen=True)
class Entry:
    """One change to record: what was done, to what, and its before and after."""

    action: str
    subject_type: str
    subject_id: str
    user_id: uuid.UUID | None = None
    reason: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


_NATIVE = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """JSON-native copy of ``value`` (UUIDs, dates and enums as strings)."""
    if value is None:
        return None
    if type(value) is dict and all(type(k) is str for k in value):
        # The usual flat entry, copied as the JSON round trip would (every audited change
        # makes one or two): a str subclass (an enum) is its value, anything else str().
        flat = {}
        for k, v in value.items():
            if type(v) in _NATIVE:
                flat[k] = v
            elif isinstance(v, str):
                flat[k] = str.__str__(v)
            elif isinstance(v, (dict, list, tuple, int, float)):
                break
            else:
                flat[k] = str(v)
        else:
            return flat
    return json.loads(json.dumps(value, default=str))


def canonical(event: dict[str, Any]) -> bytes:
    """The canonical encoding an event's hash covers."""
    return json.dumps(
        event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _hashed_fields(row: dict[str, Any] | AuditEvent) -> dict[str, Any]:
    """The fields an event's hash covers; ``request_id`` only when it has one, so that
    events written before there were request ids hash as they did."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name, None)
    user_id = get("user_id")
    fields = {
        "id": get("id"),
        "occurred_at": get("occurred_at").astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": get("actor"),
        "source": str(get("source")),
        "action": get("action"),
        "subject_type": get("subject_type"),
        "subject_id": get("subject_id"),
        "user_id": None if user_id is None else str(user_id),
        "reason": get("reason"),
        "before": get("before"),
        "after": get("after"),
    }
    if (request_id := get("request_id")) is not None:
        fields["request_id"] = request_id
    return fields


def chain_hash(prev_hash: str, row: dict[str, Any] | AuditEvent) -> str:
    """The hash of an event chained to ``prev_hash``."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(_hashed_fields(row))).hexdigest()


# Built once, run as Core statements: every audited write runs them, and the ORM's
# bulk paths cost more than the statements.
_HEADS = AuditChainHead.__table__
_HEAD = select(_HEADS.c.last_event_id, _HEADS.c.last_hash).where(_HEADS.c.id == 1).with_for_update()
_ADVANCE = (
    _HEADS.update()
    .where(_HEADS.c.id == 1)
    .values(last_event_id=bindparam("last_id"), last_hash=bindparam("last"))
)
_APPEND = AuditEvent.__table__.insert()
# ... and on the driver's cursor, where SQLAlchemy's work per execution costs more than
# these statements (see provisioning.hotpath.Prepared).
_HEAD_ROW = Prepared(_HEAD)
_APPEND_ROW = PreparedWrite(_APPEND)
_ADVANCE_HEAD = PreparedWrite(_ADVANCE)


def lock(session: Session) -> Any:
    """Take the chain head for the rest of the transaction; its last event id and hash.

    Writers that call this first are serialised on PostgreSQL (a row lock);
    SQLite serialises writers already (``BEGIN IMMEDIATE``).
    """
    session.flush()  # what the session holds goes first, as autoflush would have it
    head = _HEAD_ROW.first(session.connection(), {})
    if head is None:
        raise RuntimeError("audit chain head missing: run `provisioning db upgrade`")
    return head


def record(session: Session, origin: Origin, entries: Sequence[Entry]) -> list[int]:
    """Append ``entries`` to the chain in this transaction; return their ids.

    Set-wise: each event's canonical encoding is assembled from the parts the events
    share and its own (:func:`_encodings`), hashed in turn, and the events inserted by one
    statement per chunk, their JSON columns given the encoding already made.
    """
    if not entries:
        return []
    head = lock(session)
    now = utcnow()
    request_id = correlation.current()
    shared = {
        "occurred_at": now,
        "actor": origin.actor,
        "source": str(origin.source),
        "request_id": request_id,
    }
    prev_hash, next_id = head.last_hash, head.last_event_id + 1
    sha256 = hashlib.sha256
    rows = []
    for entry, (encoding, reason, before, after) in zip(
        entries, _encodings(shared, origin.reason, entries, next_id), strict=True
    ):
        event_hash = sha256(f"{prev_hash}\n{encoding}".encode()).hexdigest()
        rows.append(
            {
                "id": next_id,
                "action": entry.action,
                "subject_type": entry.subject_type,
                "subject_id": entry.subject_id,
                "user_id": entry.user_id,
                "reason": reason,
                "before": before,
                "after": after,
                "prev_hash": prev_hash,
                "hash": event_hash,
            }
        )
        prev_hash = event_hash
        next_id += 1
    connection = session.connection()
    for chunk in chunked(rows):
        _APPEND_ROW.run_each(connection, chunk, shared=shared, encoded=_ENCODED)
    _ADVANCE_HEAD.run(connection, {"last_id": next_id - 1, "last": prev_hash})
    return [row["id"] for row in rows]


# The columns record() gives as JSON text (the canonical encoding of the value).
_ENCODED = frozenset({"before", "after"})
_ENCODE = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
_STRING = json.encoder.encode_basestring  # as the encoder writes a str (ensure_ascii off)


def _encoded(value: Any) -> str:
    """``value`` as :func:`canonical` writes it inside an event."""
    return _STRING(value) if type(value) is str else "null" if value is None else _ENCODE(value)


# As _ENCODE, with anything not JSON-native written as its str(), as _plain copies it.
_ENCODE_AS_PLAIN = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
).encode
_CONTAINERS = (dict, list, tuple)


def _document(value: Any) -> str:
    """An entry's before or after as JSON text: ``_encoded(_plain(value))``, without the
    copy when every key is a str (a dict of values, or of lists of values): then encoding
    the value as it is writes the same text."""
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                break
            if isinstance(item, _CONTAINERS) and not (
                type(item) in (list, tuple) and not any(isinstance(i, _CONTAINERS) for i in item)
            ):
                break
        else:
            return _ENCODE_AS_PLAIN(value)
    return _encoded(_plain(value))


def _encodings(
    shared: dict[str, Any], origin_reason: str | None, entries: Sequence[Entry], first_id: int
) -> Iterator[tuple[str, str | None, str, str]]:
    """For each entry (the events ``first_id``, ...): the text of its canonical encoding
    (exactly ``canonical(_hashed_fields(row))``, keys in sorted order), its reason, and
    its before and after as JSON text."""
    occurred = shared["occurred_at"].astimezone(dt.UTC).isoformat(timespec="microseconds")
    actor = _encoded(shared["actor"])
    at = f',"occurred_at":{_encoded(occurred)},"reason":'
    request_id = shared["request_id"]
    source = ("" if request_id is None else f',"request_id":{_encoded(request_id)}') + (
        f',"source":{_encoded(shared["source"])},"subject_id":'
    )
    for event_id, entry in enumerate(entries, first_id):
        before = _document(entry.before)
        after = _document(entry.after)
        user_id = entry.user_id
        reason = _join(origin_reason, entry.reason)
        encoding = "".join(
            (
                '{"action":',
                _encoded(entry.action),
                ',"actor":',
                actor,
                ',"after":',
                after,
                ',"before":',
                before,
                ',"id":',
                str(event_id),
                at,
                _encoded(reason),
                source,
                _encoded(entry.subject_id),
                ',"subject_type":',
                _encoded(entry.subject_type),
                ',"user_id":',
                "null" if user_id is None else _encoded(str(user_id)),
                "}",
            )
        )
        yield encoding, reason, before, after


def _join(*parts: str | None) -> str | None:
    kept = [p for p in parts if p]
    return "; ".join(kept) if kept else None


@dataclass(frozen=True)
class Anchor:
    """An event's id and hash as known outside the database (a signed checkpoint held
    elsewhere); ``name`` says which, in a report."""

    event_id: int
    hash: str
    name: str


@dataclass
class Verification:
    """The outcome of walking the chain."""

    checked: int = 0
    broken_at: int | None = None
    problem: str | None = None
    head_hash: str = GENESIS_HASH
    anchored: int = 0  # anchors the chain was found to hold

    @property
    def intact(self) -> bool:
        return self.broken_at is None and self.problem is None


def verify(session: Session, anchors: Sequence[Anchor] = ()) -> Verification:
    """Walk every event in order and report the first one that breaks the chain.

    Detects an event altered (its hash no longer matches), removed or
    reordered (ids skip, or ``prev_hash`` no longer names the event before),
    and events cut off the end (the head names a later event).

    That is consistency only: whoever can bypass the database's triggers can
    cut the tail or recompute every hash, and rewrite the head to match. Each
    of ``anchors`` (an event id and hash known from elsewhere) must also be in
    the chain, so nothing up to an anchor can be cut or rewritten unseen.
    """
    result = Verification()
    prev_hash, prev_id = GENESIS_HASH, 0
    expected: dict[int, list[Anchor]] = {}
    for anchor in anchors:
        expected.setdefault(anchor.event_id, []).append(anchor)
    if not _holds(result, expected.pop(0, []), 0, GENESIS_HASH):
        return result
    events = session.execute(
        select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=5000)
    )
    for event in events.scalars():
        if event.id != prev_id + 1:
            result.broken_at = event.id
            result.problem = (
                f"event {event.id} follows event {prev_id}: events missing or reordered"
            )
            return result
        if event.prev_hash != prev_hash:
            result.broken_at = event.id
            result.problem = f"event {event.id} does not chain to event {prev_id}"
            return result
        if chain_hash(prev_hash, event) != event.hash:
            result.broken_at = event.id
            result.problem = f"event {event.id} was altered: its content does not match its hash"
            return result
        if expected and not _holds(result, expected.pop(event.id, []), event.id, event.hash):
            return result
        prev_hash, prev_id = event.hash, event.id
        result.checked += 1
    result.head_hash = prev_hash
    head = session.get(AuditChainHead, 1)
    if head is None:
        result.problem = "audit chain head missing"
    elif (head.last_event_id, head.last_hash) != (prev_id, prev_hash):
        result.broken_at = prev_id + 1
        result.problem = (
            f"chain head names event {head.last_event_id} but the log ends at event {prev_id}: "
            "events were cut off the end"
        )
    elif expected:
        beyond = min(expected)
        result.broken_at = prev_id + 1
        result.problem = (
            f"{expected[beyond][0].name} names event {beyond} but the log ends at event "
            f"{prev_id}: events were cut off the end and the head rewritten"
        )
    return result


def _holds(result: Verification, anchors: list[Anchor], event_id: int, hash_: str) -> bool:
    """Whether the event ``event_id`` with ``hash_`` is the one every anchor on it names."""
    for anchor in anchors:
        if anchor.hash != hash_:
            result.broken_at = event_id
            result.problem = (
                f"event {event_id} is not the event {anchor.name} signed: "
                f"the log up to it was rewritten"
            )
            return False
        result.anchored += 1
    return True


def as_json(event: AuditEvent) -> dict[str, Any]:
    """An event as exported: every hashed field plus its chain links."""
    return {**_hashed_fields(event), "prev_hash": event.prev_hash, "hash": event.hash}


def export(session: Session, out: IO[str], *, since_id: int = 0) -> int:
    """Write events (after ``since_id``) as JSON lines; return how many."""
    count = 0
    for event in iter_events(session, since_id=since_id):
        out.write(line(event))
        count += 1
    return count


def line(event: AuditEvent) -> str:
    """One event as the export writes it: a JSON line."""
    return json.dumps(as_json(event), sort_keys=True, ensure_ascii=False) + "\n"


def iter_events(session: Session, *, since_id: int = 0) -> Iterator[AuditEvent]:
    query = (
        select(AuditEvent)
        .where(AuditEvent.id > since_id)
        .order_by(AuditEvent.id)
        .execution_options(yield_per=5000)
    )
    yield from session.execute(query).scalars()
