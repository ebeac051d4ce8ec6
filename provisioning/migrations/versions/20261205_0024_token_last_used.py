"""A static API token remembers when it was last used.

Revision ID: 0024
Revises: 0022
Create Date: 2026-12-05

``api_tokens.last_used_at`` is written when a token authenticates a call and its recorded
use is more than a minute old (so at most once a minute per token, not on every call);
``provisioning token list`` shows it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("last_used_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
