"""A grant's last use names its agent and its AuthZEN evaluation.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

``grants.last_used_agent`` is the agent that acted for the person in the grant's last
recorded use (AuthZEN ``subject.properties.act`` or ``context.agent``) and
``grants.last_evaluation_id`` the ``evaluation_id`` of the answer that used it; both are
written with ``last_used_at`` and are empty for a use through ``/api/v1/decisions``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("grants", sa.Column("last_used_agent", sa.String(length=1000), nullable=True))
    op.add_column("grants", sa.Column("last_evaluation_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_column("last_evaluation_id")
        batch_op.drop_column("last_used_agent")
