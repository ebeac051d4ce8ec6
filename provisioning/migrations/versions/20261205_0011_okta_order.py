"""Okta events whatever their order: kept denials, parked events, times bounded by receipt.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

Also repairs what a far-future ``published`` time may already have pinned: a
recorded fact time more than the default skew (300 s) ahead of now is brought
back to now, so that the next real event or reconciliation can correct it.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OUTCOMES = ("applied", "stale", "ignored")
NEW_OUTCOMES = ("pending", "parked", "preview")
FINDING_KINDS = (
    "dormant_grant",
    "inactive_holder",
    "orphaned_user",
    "unjustified_grant",
    "reassessment_overdue",
    "unreviewed_third_party",
    "unassessed_regulated",
    "dead_letters",
)
NEW_KIND = "parked_okta_event"
SKEW = dt.timedelta(seconds=300)
# Times Okta gave that were recorded as facts; none may stay in the future of now.
FACT_TIMES = (
    ("users", "status_published_at"),
    ("users", "profile_published_at"),
    ("memberships", "published_at"),
)


def _in(column: str, values: tuple[str, ...]) -> sa.TextClause:
    return sa.text(f"{column} IN ({', '.join(repr(v) for v in values)})")


def _check(table: str, name: str, column: str, values: tuple[str, ...]) -> None:
    """Replace the CHECK constraint naming ``column``'s values (SQLite: by recreating the table)."""
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_constraint(name, type_="check")
        batch_op.create_check_constraint(name, _in(column, values))


def upgrade() -> None:
    op.create_table(
        "pending_facts",
        sa.Column("id", SERIAL, nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "deactivation",
                "removal",
                name="pendingkind",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("user_external_id", sa.String(length=255), nullable=False),
        sa.Column("group_external_id", sa.String(length=255), nullable=True),
        sa.Column("published_at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pending_facts", schema=None) as batch_op:
        batch_op.create_index("ix_pending_facts_user", ["user_external_id"], unique=False)
        batch_op.create_index("ix_pending_facts_group", ["group_external_id"], unique=False)

    op.create_table(
        "okta_parked_events",
        sa.Column("id", SERIAL, nullable=False),
        sa.Column("uuid", sa.String(length=64), nullable=True),
        sa.Column("event_type", sa.String(length=128), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("delivery_id", SERIAL, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("parked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("okta_parked_events", schema=None) as batch_op:
        batch_op.create_index("ix_okta_parked_events_uuid", ["uuid"], unique=False)

    with op.batch_alter_table("okta_events", schema=None) as batch_op:
        batch_op.alter_column("published", existing_type=sa.DateTime(), nullable=True)
        batch_op.add_column(sa.Column("ordered_at", sa.DateTime(), nullable=True))
        batch_op.drop_constraint("eventoutcome", type_="check")
        batch_op.create_check_constraint("eventoutcome", _in("outcome", OUTCOMES + NEW_OUTCOMES))

    with op.batch_alter_table("okta_inbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcomes", sa.JSON(), server_default="{}", nullable=False))

    _check("findings", "findingkind", "kind", (*FINDING_KINDS, NEW_KIND))

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    times = {
        "now": sa.bindparam("now", now, type_=sa.DateTime()),
        "limit": sa.bindparam("limit", now + SKEW, type_=sa.DateTime()),
    }
    op.execute(
        sa.text(
            "UPDATE okta_events SET ordered_at = "
            "CASE WHEN published > :limit THEN :now ELSE published END"
        ).bindparams(*times.values())
    )
    for table, column in FACT_TIMES:
        op.execute(
            sa.text(f"UPDATE {table} SET {column} = :now WHERE {column} > :limit").bindparams(
                *times.values()
            )
        )


def downgrade() -> None:
    op.execute(f"DELETE FROM findings WHERE kind = '{NEW_KIND}'")
    _check("findings", "findingkind", "kind", FINDING_KINDS)

    with op.batch_alter_table("okta_inbox", schema=None) as batch_op:
        batch_op.drop_column("outcomes")

    # What the earlier schema cannot say: a kept denial was recorded, a parked event or a
    # preview was taken and changed nothing.
    op.execute("DELETE FROM okta_events WHERE published IS NULL")
    op.execute("UPDATE okta_events SET outcome = 'applied' WHERE outcome = 'pending'")
    op.execute("UPDATE okta_events SET outcome = 'ignored' WHERE outcome IN ('parked', 'preview')")
    with op.batch_alter_table("okta_events", schema=None) as batch_op:
        batch_op.drop_constraint("eventoutcome", type_="check")
        batch_op.create_check_constraint("eventoutcome", _in("outcome", OUTCOMES))
        batch_op.drop_column("ordered_at")
        batch_op.alter_column("published", existing_type=sa.DateTime(), nullable=False)

    with op.batch_alter_table("okta_parked_events", schema=None) as batch_op:
        batch_op.drop_index("ix_okta_parked_events_uuid")
    op.drop_table("okta_parked_events")

    with op.batch_alter_table("pending_facts", schema=None) as batch_op:
        batch_op.drop_index("ix_pending_facts_group")
        batch_op.drop_index("ix_pending_facts_user")
    op.drop_table("pending_facts")
