"""Connectors as AuthZEN resources: the MCP server's resource URI and a resource type.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

``resource_uri`` is the connector's MCP server identity (its RFC 9728 protected
resource identifier, the audience of the tokens it accepts), unique when set;
``resource_type`` is the AuthZEN resource type the connector also answers to besides
``connector`` (none by default).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connectors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resource_uri", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("resource_type", sa.String(length=100), nullable=True))
        batch_op.create_unique_constraint("uq_connectors_resource_uri", ["resource_uri"])
        batch_op.create_index("ix_connectors_resource_type", ["resource_type"])


def downgrade() -> None:
    with op.batch_alter_table("connectors", schema=None) as batch_op:
        batch_op.drop_index("ix_connectors_resource_type")
        batch_op.drop_constraint("uq_connectors_resource_uri", type_="unique")
        batch_op.drop_column("resource_type")
        batch_op.drop_column("resource_uri")
