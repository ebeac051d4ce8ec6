"""What the service holds at a glance: totals, open findings by kind, daily activity."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Date, cast, func, select
from sqlalchemy.orm import Session

from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
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


def _per_day(session: Session, column, since: dt.datetime) -> dict[dt.date, int]:
    # The day of a timestamp: on SQLite the text's first ten characters (stored as naive
    # UTC text, so no date parsing per row, which cost four times as much), on PostgreSQL
    # a cast.
    if session.get_bind().dialect.name == "sqlite":
        day = func.substr(column, 1, 10)
    else:
        day = cast(column, Date)
    rows = session.execute(select(day, func.count()).where(column >= since).group_by(day)).all()
    return {dt.date.fromisoformat(str(d)[:10]): n for d, n in rows}


def activity(session: Session, days: int = 30) -> list[Day]:
    """Grants created and revoked per day (UTC) over the last ``days`` days, today included."""
    today = utcnow().date()
    first = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    granted = _per_day(session, Grant.granted_at, since)
    revoked = _per_day(session, Grant.revoked_at, since)
    span = (first + dt.timedelta(days=n) for n in range(days))
    return [Day(d, granted.get(d, 0), revoked.get(d, 0)) for d in span]


def totals(session: Session) -> Totals:
    """Live grants, people (and how many may hold access), connectors (and how many are
    enabled). Each is a count over its whole table: a million grants take a while."""
    people, active = session.execute(
        select(func.count(), func.count().filter(User.eligible)).select_from(User)
    ).one()
    connectors, enabled = session.execute(
        select(func.count(), func.count().filter(Connector.enabled)).select_from(Connector)
    ).one()
    live = session.scalar(select(func.count()).select_from(Grant).where(Grant.revoked_at.is_(None)))
    return Totals(live or 0, people, active, connectors, enabled)


def open_findings(session: Session) -> dict[str, int]:
    """Open findings by kind."""
    rows = session.execute(
        select(Finding.kind, func.count())
        .where(Finding.state == FindingState.OPEN)
        .group_by(Finding.kind)
        .order_by(Finding.kind)
    ).all()
    return {str(kind): n for kind, n in rows}
