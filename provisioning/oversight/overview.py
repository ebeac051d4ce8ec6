"""What the service holds at a glance: totals, open findings by kind, daily activity, and
how fast it acts (an Okta event to the revocation, an outbox message to its acknowledgement)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning.audit.log import Source
from provisioning.audit.models import AuditEvent
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.delivery.models import MessageState, OutboxMessage
from provisioning.entitlements import counts
from provisioning.identity.models import User
from provisioning.okta.models import SeenEvent
from provisioning.oversight.models import Finding, FindingState


@dataclass(frozen=True)
class Day:
    day: dt.date
    granted: int
    revoked: int


@dataclass(frozen=True)
class Totals:
    live_grants: int
    people: int
    active_people: int
    connectors: int
    enabled_connectors: int


def activity(session: Session, days: int = 30) -> list[Day]:
    """Grants created and revoked per day (UTC) over the last ``days`` days, today included,
    as the engine counted them (:mod:`provisioning.entitlements.counts`)."""
    today = utcnow().date()
    first = today - dt.timedelta(days=days - 1)
    counted = counts.per_day(session, first)
    span = (first + dt.timedelta(days=n) for n in range(days))
    return [Day(d, *counted.get(d, (0, 0))) for d in span]


def totals(session: Session) -> Totals:
    """Live grants (as the engine counted them), people (and how many may hold access),
    connectors (and how many are enabled); the people are counted over their table."""
    people, active = session.execute(
        select(func.count(), func.count().filter(User.eligible)).select_from(User)
    ).one()
    connectors, enabled = session.execute(
        select(func.count(), func.count().filter(Connector.enabled)).select_from(Connector)
    ).one()
    return Totals(counts.live(session), people, active, connectors, enabled)


def open_findings(session: Session) -> dict[str, int]:
    """Open findings by kind."""
    rows = session.execute(
        select(Finding.kind, func.count())
        .where(Finding.state == FindingState.OPEN)
        .group_by(Finding.kind)
        .order_by(Finding.kind)
    ).all()
    return {str(kind): n for kind, n in rows}


LATENCY_SAMPLE = 100_000
"""At most this many of the window's revocations or deliveries are timed."""


@dataclass(frozen=True)
class Latency:
    """How long something took over a window: how many were timed, the median and the 99th
    percentile (nearest rank), in seconds; None when nothing happened."""

    count: int
    p50: float | None
    p99: float | None


def _latency(seconds: list[float]) -> Latency:
    if not seconds:
        return Latency(0, None, None)
    seconds.sort()

    def rank(q: float) -> float:
        return seconds[max(0, math.ceil(q * len(seconds)) - 1)]

    return Latency(len(seconds), rank(0.5), rank(0.99))


def _okta_event(reason: str | None) -> str | None:
    """The uuid of the Okta event an audit reason names (``okta event TYPE UUID``, as
    :func:`provisioning.okta.events.origin_of` writes it, first of the joined reasons)."""
    parts = (reason or "").split("; ", 1)[0].split(" ", 3)
    return parts[3] if len(parts) == 4 and parts[:2] == ["okta", "event"] else None


def event_to_revoke(session: Session, since: dt.datetime) -> Latency:
    """From Okta publishing an event to the grant it revoked: each grant revoked since
    ``since`` because of an Okta event (hook or System Log), timed from the event's
    ``published`` to the revocation's audit event (never below zero: Okta's clock is data)."""
    rows = session.execute(
        select(AuditEvent.occurred_at, AuditEvent.reason)
        .where(
            AuditEvent.occurred_at >= since,
            AuditEvent.action == "grant.revoked",
            AuditEvent.source.in_([str(Source.OKTA_HOOK), str(Source.OKTA_SYNC)]),
        )
        .limit(LATENCY_SAMPLE)
    ).all()
    revoked = [(at, _okta_event(reason)) for at, reason in rows]
    wanted = sorted({uuid for _, uuid in revoked if uuid})
    published: dict[str, dt.datetime] = {}
    for start in range(0, len(wanted), 1000):
        published.update(
            session.execute(
                select(SeenEvent.uuid, SeenEvent.published).where(
                    SeenEvent.uuid.in_(wanted[start : start + 1000]),
                    SeenEvent.published.is_not(None),
                )
            ).all()
        )
    return _latency(
        [
            max(0.0, (at - published[uuid]).total_seconds())
            for at, uuid in revoked
            if uuid in published
        ]
    )


def delivery(session: Session, since: dt.datetime) -> Latency:
    """From an outbox message's creation to its target's acknowledgement, for every
    message acknowledged since ``since``."""
    rows = session.execute(
        select(OutboxMessage.created_at, OutboxMessage.delivered_at)
        .where(
            OutboxMessage.state == MessageState.DELIVERED,
            OutboxMessage.delivered_at >= since,
        )
        .limit(LATENCY_SAMPLE)
    ).all()
    return _latency([max(0.0, (done - made).total_seconds()) for made, done in rows])


@dataclass(frozen=True)
class Speed:
    """How fast the service acted over the last ``hours``."""

    hours: int
    event_to_revoke: Latency
    delivery: Latency


def speed(session: Session, hours: int = 24) -> Speed:
    """:func:`event_to_revoke` and :func:`delivery` over the last ``hours``."""
    since = utcnow() - dt.timedelta(hours=hours)
    return Speed(hours, event_to_revoke(session, since), delivery(session, since))
