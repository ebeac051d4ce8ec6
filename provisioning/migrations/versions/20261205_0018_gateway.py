"""Connectors know their MCP server's endpoint; actions keep what the server says of its tools.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05

``connectors.mcp_url`` is the streamable HTTP endpoint of the connector's MCP server (the
one ``provisioning connectors sync-tools`` lists and ``provisioning gateway`` fronts).
``actions.annotations`` keeps the tool's annotations as the server last stated them (hints
for reviewers, never trusted), ``actions.vanished_at`` when a catalogued tool was last found
missing from the server (flagged, not deleted). A new finding kind, ``uncatalogued_tool``:
a tool the server offers that the catalogue does not know.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

FINDING_KINDS = (
    "dormant_grant",
    "inactive_holder",
    "orphaned_user",
    "unjustified_grant",
    "reassessment_overdue",
    "unreviewed_third_party",
    "unassessed_regulated",
    "dead_letters",
    "parked_okta_event",
)
NEW_KIND = "uncatalogued_tool"


def _kinds(values: tuple[str, ...]) -> None:
    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.drop_constraint("findingkind", type_="check")
        batch_op.create_check_constraint(
            "findingkind", sa.text(f"kind IN ({', '.join(repr(v) for v in values)})")
        )


def upgrade() -> None:
    with op.batch_alter_table("connectors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mcp_url", sa.String(length=500), nullable=True))
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("annotations", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("vanished_at", sa.DateTime(), nullable=True))
    _kinds((*FINDING_KINDS, NEW_KIND))


def downgrade() -> None:
    op.execute(f"DELETE FROM findings WHERE kind = '{NEW_KIND}'")
    _kinds(FINDING_KINDS)
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_column("vanished_at")
        batch_op.drop_column("annotations")
    with op.batch_alter_table("connectors", schema=None) as batch_op:
        batch_op.drop_column("mcp_url")
