"""Audit events and outbox messages carry the request id of the change.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05

``audit_events.request_id`` and ``outbox_messages.request_id`` hold the ``X-Request-ID``
of the HTTP request that made the change (accepted when plausible, else generated:
provisioning/correlation.py); empty for changes no request made (jobs, the CLI) and for
rows written before. An audit event's hash covers its request id when it has one, so
the events already chained hash as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("request_id", sa.String(length=128), nullable=True))
    op.add_column("outbox_messages", sa.Column("request_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a batch copy: copying audit_events
    # would drop the triggers that keep it append-only.
    op.drop_column("outbox_messages", "request_id")
    op.drop_column("audit_events", "request_id")
