"""Grants made and revoked per UTC day, counted as the engine writes them.

The engine adds to the day's row (:func:`add`) in the transaction that inserts or
revokes grants, under the audit chain's lock it already holds, so the row never makes
a writer wait that would not have waited anyway. Every grant is inserted and every
revocation written by the engine alone, and a grant row is deleted only once revoked
(its connector's removal), so the live total is what was granted less what was revoked.
A bulk load that writes grants without the engine calls :func:`recount` afterwards (the
migration that made the table counted the grants already there the same way).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Date, cast, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from provisioning.entitlements.models import Grant, GrantDay


def _upsert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(GrantDay)


def add(session: Session, day: dt.date, *, granted: int = 0, revoked: int = 0) -> None:
    """Count ``granted`` new grants and ``revoked`` revocations on ``day``."""
    if not granted and not revoked:
        return
    statement = _upsert(session).values(day=day, granted=granted, revoked=revoked)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[GrantDay.day],
            set_={
                "granted": GrantDay.granted + statement.excluded.granted,
                "revoked": GrantDay.revoked + statement.excluded.revoked,
            },
        )
    )


def per_day(session: Session, first: dt.date) -> dict[dt.date, tuple[int, int]]:
    """(granted, revoked) of each day from ``first`` on that saw any."""
    rows = session.execute(
        select(GrantDay.day, GrantDay.granted, GrantDay.revoked).where(GrantDay.day >= first)
    )
    return {day: (granted, revoked) for day, granted, revoked in rows}


def live(session: Session) -> int:
    """Grants live now: every grant made less every revocation."""
    granted, revoked = session.execute(
        select(
            func.coalesce(func.sum(GrantDay.granted), 0),
            func.coalesce(func.sum(GrantDay.revoked), 0),
        )
    ).one()
    return int(granted) - int(revoked)


def _day(session: Session, column: Any) -> Any:
    # On SQLite the stored text's first ten characters (naive UTC), on PostgreSQL a cast.
    if session.get_bind().dialect.name == "sqlite":
        return func.substr(column, 1, 10)
    return cast(column, Date)


def recount(session: Session) -> None:
    """Count every grant again from the grants table (after a load that bypassed the
    engine): one pass over the grants for what was made, one for what was revoked."""
    counted: dict[dt.date, list[int]] = {}
    for column, index in ((Grant.granted_at, 0), (Grant.revoked_at, 1)):
        day = _day(session, column)
        rows = session.execute(select(day, func.count()).where(column.is_not(None)).group_by(day))
        for value, n in rows:
            key = dt.date.fromisoformat(str(value)[:10])
            counted.setdefault(key, [0, 0])[index] = n
    session.execute(delete(GrantDay))
    if counted:
        session.execute(
            insert(GrantDay),
            [{"day": d, "granted": g, "revoked": r} for d, (g, r) in sorted(counted.items())],
        )
