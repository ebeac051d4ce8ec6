"""Call-level approvals: actions that need an approver, call tasks, Idempotency-Key.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05

``actions.requires_approver``: a ``needs_approval`` action whose calls a second person
(the connector's request-policy chain) approves, not only the caller's own click.
``access_requests.kind`` is ``access`` (a connector for a time) or ``call`` (one tool
call, bound by ``call``: person, connector, tool, argument digest, policy version);
``task_id`` and ``approval_id`` are the opaque handles of the AuthZEN Access Request &
Approval profile, ``binding_jti`` the binding token a task was opened with (once),
``approved_until`` the end of an approved call's window. ``idempotency_key`` (a digest of
the credential and its ``Idempotency-Key``) and ``idempotency_digest`` (of the body)
make a repeated submission answer the same request.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "actions",
        sa.Column("requires_approver", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="access")
        )
        batch.add_column(sa.Column("task_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("approval_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("binding_jti", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("approved_until", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("call", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("idempotency_digest", sa.String(length=64), nullable=True))
        batch.create_index("ux_access_requests_task_id", ["task_id"], unique=True)
        batch.create_index("ux_access_requests_approval_id", ["approval_id"], unique=True)
        batch.create_index("ux_access_requests_binding_jti", ["binding_jti"], unique=True)
        batch.create_index("ux_access_requests_idempotency_key", ["idempotency_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        for name in ("idempotency_key", "binding_jti", "approval_id", "task_id"):
            batch.drop_index(f"ux_access_requests_{name}")
        for name in (
            "idempotency_digest",
            "idempotency_key",
            "call",
            "approved_until",
            "binding_jti",
            "approval_id",
            "task_id",
            "kind",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("actions") as batch:
        batch.drop_column("requires_approver")
