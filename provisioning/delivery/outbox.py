"""The transactional outbox: messages owed to targets, written in the transaction of their change.

Invariant 3 (docs/architecture.md): a change, its audit event and the messages that tell
downstream targets about it commit together or not at all. The engine calls
:func:`enqueue` with the grants it changed; offboarding and reinstatement add
their user events. Nothing is sent here: the delivery worker
(:mod:`provisioning.delivery.worker`) reads committed rows.

Event types: ``grant.created``, ``grant.updated`` (access level changed),
``grant.revoked``, ``user.offboarded``, ``user.reinstated``; reminders
``grant.dormant`` (revoked when the connector's grace ends),
``exception.expiring``, ``mapping.expiring``, ``review.deadline``. A target
limited to some connectors gets only the events of those connectors, and every
event about no connector. The callback target gets none of them: only the
``request.callback`` messages :func:`enqueue_callback` writes for it.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from provisioning import correlation
from provisioning.audit.log import Entry, Origin, record
from provisioning.database import chunked, utcnow
from provisioning.delivery.models import MessageState, OutboxMessage, Target, TargetKind
from provisioning.identity.models import User
from provisioning.oversight.findings import observe
from provisioning.oversight.models import FindingKind, Severity

# The chain of events about no one user (a campaign's reminder, a mapping's expiry).
SERVICE = uuid.UUID(int=0)


@dataclass(frozen=True)
class Event:
    """One change to tell targets about; ``connector_id`` is None for user events."""

    type: str
    user_id: uuid.UUID
    data: dict[str, Any] = field(default_factory=dict)
    connector_id: int | None = None


# -- waking the delivery worker of this process after a commit ----------------

_wakers: list[Callable[[], None]] = []
_wakers_lock = threading.Lock()


def on_enqueued(waker: Callable[[], None]) -> Callable[[], None]:
    """Call ``waker`` after each commit that enqueued messages; return an unsubscriber."""
    with _wakers_lock:
        _wakers.append(waker)

    def unsubscribe() -> None:
        with _wakers_lock:
            if waker in _wakers:
                _wakers.remove(waker)

    return unsubscribe


def _wake_after_commit(session: Session) -> None:
    if session.info.get("outbox.wake"):
        return
    session.info["outbox.wake"] = True

    from sqlalchemy import event

    def wake(_session: Session) -> None:
        _session.info.pop("outbox.wake", None)
        with _wakers_lock:
            wakers = list(_wakers)
        for waker in wakers:
            waker()

    event.listen(session, "after_commit", wake, once=True)


# -- writing ---------------------------------------------------------------


def _targets(session: Session) -> list[tuple[int, frozenset[int] | None]]:
    rows = session.execute(
        select(Target.id, Target.connector_ids)
        .where(Target.enabled.is_(True), Target.kind != TargetKind.CALLBACK)
        .order_by(Target.id)
    )
    return [(tid, None if ids is None else frozenset(ids)) for tid, ids in rows]


def _people(session: Session, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    people: dict[uuid.UUID, dict[str, Any]] = {}
    ids = list(user_ids)
    for chunk in chunked(ids):
        rows = session.execute(
            select(
                User.id,
                User.user_name,
                User.external_id,
                User.display_name,
                User.email,
                User.active,
            ).where(User.id.in_(chunk))
        )
        for row in rows:
            people[row.id] = {
                "id": str(row.id),
                "userName": row.user_name,
                "externalId": row.external_id,
                "displayName": row.display_name,
                "email": row.email,
                "active": row.active,
            }
    return people


def enqueue(session: Session, events: Iterable[Event]) -> list[int]:
    """Write one message per (event, enabled target that wants it); return their ids.

    Each event gets one id, shared by its messages to every target, so a
    receiver listening on two targets can still tell repeats apart.
    """
    targets = _targets(session)
    if not targets:
        return []
    events = list(events)
    if not events:
        return []
    people = _people(session, {e.user_id for e in events} - {SERVICE})
    now = utcnow()
    request_id = correlation.current()
    rows: list[dict[str, Any]] = []
    for e in events:
        event_id = uuid.uuid4()
        payload = e.data if e.user_id == SERVICE else {"user": people[e.user_id], **e.data}
        for target_id, connectors in targets:
            wanted = connectors is None or e.connector_id is None or e.connector_id in connectors
            if not wanted:
                continue
            rows.append(
                {
                    "event_id": event_id,
                    "target_id": target_id,
                    "user_id": e.user_id,
                    "event_type": e.type,
                    "payload": payload,
                    "created_at": now,
                    "state": MessageState.PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "request_id": request_id,
                }
            )
    ids: list[int] = []
    for chunk in chunked(rows):
        ids += session.scalars(
            insert(OutboxMessage).returning(OutboxMessage.id, sort_by_parameter_order=True),
            chunk,
        ).all()
    if ids:
        _wake_after_commit(session)
    return ids


# -- callbacks: one message to the endpoint a task named ------------------------

CALLBACK_TARGET = "authzen callbacks"  # not a name the targets API accepts
CALLBACK_EVENT = "request.callback"


def callback_target(session: Session, max_attempts: int) -> int:
    """The id of the callback target, made on first use (race-safe: one unique index on
    its kind, ``ON CONFLICT DO NOTHING``). An admin may disable it (callbacks wait),
    change its ``max_attempts``, retry its dead letters; its messages name their URLs."""
    found = session.scalar(select(Target.id).where(Target.kind == TargetKind.CALLBACK))
    if found is not None:
        return found
    now = utcnow()
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(
        dialect.insert(Target)
        .on_conflict_do_nothing()
        .values(
            name=CALLBACK_TARGET,
            kind=TargetKind.CALLBACK,
            url="callback:each task's callback.endpoint",
            secret="",  # the key is PROVISIONING_CALLBACK_SECRET
            connector_ids=None,
            enabled=True,
            max_attempts=max_attempts,
            created_at=now,
            updated_at=now,
            version=1,
        )
    )
    return session.scalar(select(Target.id).where(Target.kind == TargetKind.CALLBACK))


def enqueue_callback(
    session: Session, user_id: uuid.UUID, endpoint: str, body: dict[str, Any], max_attempts: int
) -> int:
    """Owe ``body`` to ``endpoint`` (a task's callback, about ``user_id``'s call), in the
    caller's transaction; the message's id. Delivered as every message is: in order per
    person, retried, dead-lettered (provisioning/delivery/callbacks.py sends it)."""
    now = utcnow()
    message_id = session.scalar(
        insert(OutboxMessage).returning(OutboxMessage.id),
        {
            "event_id": uuid.uuid4(),
            "target_id": callback_target(session, max_attempts),
            "user_id": user_id,
            "event_type": CALLBACK_EVENT,
            "payload": {"endpoint": endpoint, "body": body},
            "created_at": now,
            "state": MessageState.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "request_id": correlation.current(),
        },
    )
    _wake_after_commit(session)
    return message_id


# -- reading and re-queueing -------------------------------------------------


@dataclass(frozen=True)
class Depth:
    pending: int
    dead: int
    oldest_pending_at: dt.datetime | None


def depth(session: Session) -> Depth:
    """Messages not yet acknowledged, dead letters, and the age of the oldest pending one."""
    counts = dict(
        session.execute(
            select(OutboxMessage.state, func.count())
            .where(OutboxMessage.state != MessageState.DELIVERED)
            .group_by(OutboxMessage.state)
        ).all()
    )
    oldest = session.scalar(
        select(func.min(OutboxMessage.created_at)).where(
            OutboxMessage.state == MessageState.PENDING
        )
    )
    return Depth(
        counts.get(MessageState.PENDING, 0),
        counts.get(MessageState.DEAD, 0),
        oldest,
    )


@dataclass(frozen=True)
class TargetHealth:
    """One target's share of the outbox: owed, dead-lettered, and the oldest owed."""

    target_id: int
    name: str
    enabled: bool
    pending: int
    dead: int
    oldest_pending_at: dt.datetime | None


def health(session: Session) -> list[TargetHealth]:
    """:func:`depth` per target, every target named (those owed nothing too), by name."""
    owed = (
        select(
            OutboxMessage.target_id,
            func.count().filter(OutboxMessage.state == MessageState.PENDING).label("pending"),
            func.count().filter(OutboxMessage.state == MessageState.DEAD).label("dead"),
            func.min(OutboxMessage.created_at)
            .filter(OutboxMessage.state == MessageState.PENDING)
            .label("oldest"),
        )
        .where(OutboxMessage.state != MessageState.DELIVERED)
        .group_by(OutboxMessage.target_id)
        .subquery()
    )
    rows = session.execute(
        select(Target.id, Target.name, Target.enabled, owed.c.pending, owed.c.dead, owed.c.oldest)
        .outerjoin(owed, owed.c.target_id == Target.id)
        .order_by(Target.name)
    )
    return [
        TargetHealth(id_, name, enabled, pending or 0, dead or 0, oldest)
        for id_, name, enabled, pending, dead, oldest in rows
    ]


def retry_dead(
    session: Session, origin: Origin, *, target_id: int, message_ids: list[int] | None = None
) -> int:
    """Put a target's dead letters (all, or those named) back in line; return how many.

    They keep their id, so they go out in their original order relative to
    the messages still pending for the same user, and their event id.
    """
    query = (
        update(OutboxMessage)
        .where(OutboxMessage.target_id == target_id, OutboxMessage.state == MessageState.DEAD)
        .values(
            state=MessageState.PENDING,
            attempts=0,
            next_attempt_at=utcnow(),
            leased_until=None,
        )
    )
    if message_ids is not None:
        query = query.where(OutboxMessage.id.in_(message_ids))
    count = session.execute(query).rowcount
    if count:
        record(
            session,
            origin,
            [Entry("target.retried", "target", str(target_id), after={"retried": count})],
        )
        dead_letter_findings(session)
        _wake_after_commit(session)
    return count


def prune(session: Session, *, older_than: dt.timedelta, batch: int = 10_000) -> int:
    """Delete delivered messages acknowledged before ``older_than`` ago; return how many.

    Pending and dead-lettered messages are never pruned. An offboarding older
    than the retention then reports no messages for its targets: the audit log
    keeps what was revoked, and when.
    """
    cutoff = utcnow() - older_than
    removed = 0
    while True:
        ids = session.scalars(
            select(OutboxMessage.id)
            .where(
                OutboxMessage.state == MessageState.DELIVERED,
                OutboxMessage.delivered_at < cutoff,
            )
            .limit(batch)
        ).all()
        if not ids:
            return removed
        session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(ids)))
        removed += len(ids)


def acknowledgements(session: Session, message_ids: list[int]) -> list[dict[str, Any]]:
    """Per target, how many of these messages are delivered, pending and dead."""
    if not message_ids:
        return []
    rows = session.execute(
        select(Target.id, Target.name, OutboxMessage.state, func.count())
        .join(Target, Target.id == OutboxMessage.target_id)
        .where(OutboxMessage.id.in_(message_ids))
        .group_by(Target.id, Target.name, OutboxMessage.state)
        .order_by(Target.id)
    )
    by_target: dict[int, dict[str, Any]] = {}
    for target_id, name, state, count in rows:
        entry = by_target.setdefault(
            target_id,
            {"target_id": target_id, "name": name, "delivered": 0, "pending": 0, "dead": 0},
        )
        entry[str(state)] = count
    for entry in by_target.values():
        entry["acknowledged"] = entry["pending"] == 0 and entry["dead"] == 0
    return list(by_target.values())


def dead_letter_findings(session: Session) -> None:
    """One open finding per target holding dead letters; resolved once none is left.

    The evidence names the target; how many letters are dead, and why, is in
    ``GET /api/v1/targets/{id}/messages?state=dead``.
    """
    rows = session.execute(
        select(
            Target.id,
            Target.name,
            func.min(OutboxMessage.created_at),
        )
        .join(OutboxMessage, OutboxMessage.target_id == Target.id)
        .where(OutboxMessage.state == MessageState.DEAD)
        .group_by(Target.id, Target.name)
    )
    observe(
        session,
        FindingKind.DEAD_LETTERS,
        Severity.HIGH,
        "target",
        [
            (str(tid), {"target": name, "first_dead_letter_created": oldest.isoformat()})
            for tid, name, oldest in rows
        ],
    )
