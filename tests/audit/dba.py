"""Acting as a database administrator would: with the audit tables' triggers out of the way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text

AUDIT_TABLES = ("audit_events", "audit_chain_head")


@contextmanager
def bypassing_triggers(database) -> Iterator[Connection]:
    """One transaction in which no trigger fires, as its owner or a superuser can have it.

    PostgreSQL: ``session_replication_role = replica`` (a superuser's setting). SQLite
    has no privileges: whoever can write the file drops the triggers, and puts them back.
    """
    with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            yield conn
            return
        triggers = conn.execute(
            text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name IN ('audit_events', 'audit_chain_head')"
            )
        ).all()
        for name, _ in triggers:
            conn.execute(text(f"DROP TRIGGER {name}"))
        yield conn
        for _, sql in triggers:
            conn.execute(text(sql))


def cut(conn: Connection, *, after: int) -> None:
    """Remove every event after ``after`` and point the head at the one left last."""
    conn.execute(text("DELETE FROM audit_events WHERE id > :after"), {"after": after})
    last = conn.execute(
        text("SELECT id, hash FROM audit_events WHERE id = :after"), {"after": after}
    ).first()
    last_id, last_hash = (0, "0" * 64) if last is None else tuple(last)
    conn.execute(
        text("UPDATE audit_chain_head SET last_event_id = :id, last_hash = :hash"),
        {"id": last_id, "hash": last_hash},
    )
