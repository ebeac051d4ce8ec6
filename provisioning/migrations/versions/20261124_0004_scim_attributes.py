"""SCIM: unmodelled attributes, version counters, case-insensitive lookup indexes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    for table in ("users", "groups"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("scim_attributes", JSON_DOCUMENT, nullable=True))
            batch_op.add_column(
                sa.Column("version", sa.Integer(), server_default="1", nullable=False)
            )
    op.create_index("ix_users_display_name_key", "users", [sa.text("lower(display_name)")])
    op.create_index("ix_users_email_key", "users", [sa.text("lower(email)")])
    op.create_index("ix_users_active", "users", ["active"])
    op.create_index("ix_users_updated_at", "users", ["updated_at"])
    op.create_index("ix_groups_display_name_key", "groups", [sa.text("lower(display_name)")])
    op.create_index("ix_groups_updated_at", "groups", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_groups_updated_at", table_name="groups")
    op.drop_index("ix_groups_display_name_key", table_name="groups")
    op.drop_index("ix_users_updated_at", table_name="users")
    op.drop_index("ix_users_active", table_name="users")
    op.drop_index("ix_users_email_key", table_name="users")
    op.drop_index("ix_users_display_name_key", table_name="users")
    for table in ("groups", "users"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("version")
            batch_op.drop_column("scim_attributes")
