"""Callback completion of call-approval tasks: the task's callback, the callback target.

Revision ID: 0028
Revises: 0026
Create Date: 2026-12-05

``access_requests.callback`` holds a call task's callback (endpoint, state, events and
the task's status endpoint). ``targets.kind`` gains ``callback``: the one target (unique
index ``ux_targets_callback``) whose outbox messages are tasks' notifications, each to the
endpoint it names.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0026"
branch_labels = None
depends_on = None


def _kinds(*kinds: str) -> None:
    """Replace the CHECK constraint naming the target kinds (SQLite: by recreating the
    table), the column as wide as the longest."""
    allowed = ", ".join(f"'{kind}'" for kind in kinds)
    with op.batch_alter_table("targets") as batch:
        batch.drop_constraint("targetkind", type_="check")
        batch.alter_column(
            "kind",
            type_=sa.String(length=max(map(len, kinds))),
            existing_nullable=False,
        )
        batch.create_check_constraint("targetkind", sa.text(f"kind IN ({allowed})"))


def upgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("callback", sa.JSON(), nullable=True))
    _kinds("webhook", "scim", "callback")
    op.create_index(
        "ux_targets_callback",
        "targets",
        ["kind"],
        unique=True,
        postgresql_where=sa.text("kind = 'callback'"),
        sqlite_where=sa.text("kind = 'callback'"),
    )


def downgrade() -> None:
    op.execute("DELETE FROM targets WHERE kind = 'callback'")
    op.drop_index("ux_targets_callback", table_name="targets")
    _kinds("webhook", "scim")
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_column("callback")
