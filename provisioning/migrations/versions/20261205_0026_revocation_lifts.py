"""An admin may lift a review's revocation, saying why.

Revision ID: 0026
Revises: 0024
Create Date: 2026-12-05

``review_revocations.lifted_at`` / ``lifted_by`` / ``lift_reason``: a lifted revocation no
longer withdraws the sources of access it withdrew (the engine gives back what they justify).
``ix_review_revocations_item`` finds an item's revocation.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_revocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lifted_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("lifted_by", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("lift_reason", sa.Text(), nullable=True))
        batch_op.create_index("ix_review_revocations_item", ["item_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("review_revocations", schema=None) as batch_op:
        batch_op.drop_index("ix_review_revocations_item")
        batch_op.drop_column("lift_reason")
        batch_op.drop_column("lifted_by")
        batch_op.drop_column("lifted_at")
