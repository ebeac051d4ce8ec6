"""Access requests: request policies per connector, requests, their approval steps.

Revision ID: 0019
Revises: 0014
Create Date: 2026-12-05

``request_policies`` says whether and how a connector may be requested (approval chain,
longest duration, time to decide); ``access_requests`` holds each request and, once
approved, the time-bound access it gives (a source of access); ``request_steps`` each
approver's decision. ``api_tokens.user_id`` binds a static token to the person it speaks for.
``separation_rules`` (incompatible access: any of these connectors with any of those) and
``separation_exemptions`` (one person allowed, until an expiry); findings of the new kind
``separation_violation``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
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
NEW_KIND = "separation_violation"


def _check(table: str, name: str, column: str, values: tuple[str, ...]) -> None:
    """Replace the CHECK constraint naming ``column``'s values (SQLite: by recreating the table)."""
    values_sql = ", ".join(repr(v) for v in values)
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_constraint(name, type_="check")
        batch_op.create_check_constraint(name, sa.text(f"{column} IN ({values_sql})"))


def upgrade() -> None:
    op.create_table(
        "separation_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("these", sa.JSON(), nullable=False),
        sa.Column("those", sa.JSON(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "separation_exemptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("approved_by", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["rule_id"], ["separation_rules.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("separation_exemptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_separation_exemptions_rule_user", ["rule_id", "user_id"], unique=False
        )
    _check("findings", "findingkind", "kind", (*FINDING_KINDS, NEW_KIND))
    op.create_table(
        "access_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("requested_by_id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column(
            "access_level",
            sa.Enum(
                "read",
                "read_write",
                "interactive",
                name="accesslevel",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("actions", sa.JSON(), nullable=True),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("duration_days", sa.Integer(), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "approved",
                "denied",
                "expired",
                "cancelled",
                name="requeststate",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("deadline", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("closed_by", sa.String(length=255), nullable=True),
        sa.Column("granted_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("reminded_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["connector_id"], ["connectors.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("access_requests", schema=None) as batch_op:
        batch_op.create_index("ix_access_requests_state", ["state", "deadline"], unique=False)
        batch_op.create_index(
            "ix_access_requests_user_connector", ["user_id", "connector_id"], unique=False
        )

    op.create_table(
        "request_policies",
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("max_days", sa.Integer(), nullable=False),
        sa.Column("decide_within_days", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["connector_id"], ["connectors.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("connector_id"),
    )
    op.create_table(
        "request_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column(
            "role",
            sa.Enum("owner", "manager", name="approver", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("approver_id", sa.Uuid(), nullable=False),
        sa.Column("approver", sa.String(length=255), nullable=False),
        sa.Column(
            "decision",
            sa.Enum(
                "approve", "deny", name="requestdecision", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["access_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("request_steps", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_request_steps_request_id"), ["request_id"], unique=False
        )

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.execute(f"DELETE FROM findings WHERE kind = '{NEW_KIND}'")
    _check("findings", "findingkind", "kind", FINDING_KINDS)
    with op.batch_alter_table("separation_exemptions", schema=None) as batch_op:
        batch_op.drop_index("ix_separation_exemptions_rule_user")
    op.drop_table("separation_exemptions")
    op.drop_table("separation_rules")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("user_id")

    with op.batch_alter_table("request_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_steps_request_id"))

    op.drop_table("request_steps")
    op.drop_table("request_policies")
    with op.batch_alter_table("access_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_access_requests_user_connector")
        batch_op.drop_index("ix_access_requests_state")

    op.drop_table("access_requests")
