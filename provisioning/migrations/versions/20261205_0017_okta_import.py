"""Checkpoints of the initial Okta import: which groups are done, and where each resumes.

Revision ID: 0017
Revises: 0014
Create Date: 2026-12-05

``okta_import_groups`` holds, for each group of an import (``provisioning okta import``),
Okta's cursor of its next page of members, the pages done and whether it is done; each
row is committed with the members it covers, so a resumed import fetches no completed
page again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "okta_import_groups",
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("okta_group_id", sa.String(length=255), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.Column("after", sa.String(length=255), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["import_id"], ["okta_sync_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("import_id", "okta_group_id"),
    )


def downgrade() -> None:
    op.drop_table("okta_import_groups")
