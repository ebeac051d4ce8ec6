"""Acting as a database administrator would: with the audit tables' triggers out of the way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text

from provisioning.audit.log import chain_hash
from provisioning.audit.models import GENESIS_HASH, AuditEvent

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
    last_id, last_hash = (0, GENESIS_HASH) if last is None else tuple(last)
    conn.execute(
        text("UPDATE audit_chain_head SET last_event_id = :id, last_hash = :hash"),
        {"id": last_id, "hash": last_hash},
    )


def events(conn: Connection) -> list[dict]:
    """Every event as a row of values, in id order."""
    table = AuditEvent.__table__
    return [dict(row) for row in conn.execute(table.select().order_by(table.c.id)).mappings()]


def rechain(conn: Connection, rows: list[dict]) -> None:
    """Replace the log by ``rows``, numbered from 1 and hashed afresh, and point the head
    at the last: a rewritten history that is consistent in itself."""
    conn.execute(text("DELETE FROM audit_events"))
    prev = GENESIS_HASH
    for n, row in enumerate(rows, 1):
        row = {**row, "id": n, "prev_hash": prev}
        row["hash"] = prev = chain_hash(prev, row)
        conn.execute(AuditEvent.__table__.insert(), row)
    conn.execute(
        text("UPDATE audit_chain_head SET last_event_id = :id, last_hash = :hash"),
        {"id": len(rows), "hash": prev},
    )
