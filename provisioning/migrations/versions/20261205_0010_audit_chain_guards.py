"""Audit chain guards: no TRUNCATE of the audit tables; a head that only advances with the chain.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24

Row-level triggers (0001) refuse UPDATE and DELETE of events, but PostgreSQL's
TRUNCATE passes them, and the head row could be pointed anywhere: truncating
the events and resetting the head left an "intact" empty chain. Here the
database refuses TRUNCATE of either table, DELETE of the head, and any change
of the head other than to the chain's last event (by id and hash), never
backwards. Writers (``audit.record``) insert their events first, then advance
the head to the last of them, so they pass.

A batch migration on SQLite (``batch_alter_table``) rebuilds a table and loses
its triggers: one on these tables must create them again.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64

# True when NEW is not the chain's last event (or, before the first event, the genesis),
# or lies behind OLD.
_OFF_THE_CHAIN = f"""
    NEW.id <> OLD.id
    OR NEW.last_event_id < OLD.last_event_id
    OR EXISTS (SELECT 1 FROM audit_events WHERE id > NEW.last_event_id)
    OR NOT (
        EXISTS (
            SELECT 1 FROM audit_events WHERE id = NEW.last_event_id AND hash = NEW.last_hash
        )
        OR (NEW.last_event_id = 0 AND NEW.last_hash = '{GENESIS_HASH}')
    )
"""

GUARDS = {
    "postgresql": [
        """
        CREATE FUNCTION audit_no_truncate() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the audit log is append-only: TRUNCATE of % refused', TG_TABLE_NAME;
        END $$
        """,
        """
        CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate()
        """,
        """
        CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head
        FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate()
        """,
        f"""
        CREATE FUNCTION audit_chain_head_advances() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                RAISE EXCEPTION 'audit chain head: DELETE refused';
            END IF;
            IF {_OFF_THE_CHAIN} THEN
                RAISE EXCEPTION
                    'audit chain head may only advance to the last event: event % refused',
                    NEW.last_event_id;
            END IF;
            RETURN NEW;
        END $$
        """,
        """
        CREATE TRIGGER audit_chain_head_advances BEFORE UPDATE OR DELETE ON audit_chain_head
        FOR EACH ROW EXECUTE FUNCTION audit_chain_head_advances()
        """,
    ],
    # SQLite has no TRUNCATE: DELETE without WHERE fires the row triggers of 0001.
    "sqlite": [
        f"""
        CREATE TRIGGER audit_chain_head_advances BEFORE UPDATE ON audit_chain_head
        WHEN {_OFF_THE_CHAIN}
        BEGIN
            SELECT RAISE(ABORT, 'audit chain head may only advance to the last event');
        END
        """,
        """
        CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head
        BEGIN SELECT RAISE(ABORT, 'audit chain head: DELETE refused'); END
        """,
    ],
}
DROP_GUARDS = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS audit_chain_head_advances ON audit_chain_head",
        "DROP FUNCTION IF EXISTS audit_chain_head_advances()",
        "DROP TRIGGER IF EXISTS audit_chain_head_no_truncate ON audit_chain_head",
        "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events",
        "DROP FUNCTION IF EXISTS audit_no_truncate()",
    ],
    "sqlite": [
        "DROP TRIGGER IF EXISTS audit_chain_head_no_delete",
        "DROP TRIGGER IF EXISTS audit_chain_head_advances",
    ],
}


def upgrade() -> None:
    for statement in GUARDS[op.get_bind().dialect.name]:
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_GUARDS[op.get_bind().dialect.name]:
        op.execute(statement)
