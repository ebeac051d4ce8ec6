"""Grants made and revoked per day, counted by the engine (the overview reads these).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05

``grant_days`` holds, per UTC day, how many grants the engine made and revoked
(provisioning/entitlements/counts.py). The grants already there are counted here, one
pass over the grants table for what was made and one for what was revoked.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    grant_days = op.create_table(
        "grant_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("granted", sa.BigInteger(), nullable=False),
        sa.Column("revoked", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_grant_days")),
    )
    bind = op.get_bind()
    counted: dict[dt.date, list[int]] = {}
    for column, index in (("granted_at", 0), ("revoked_at", 1)):
        day = f"substr({column}, 1, 10)" if bind.dialect.name == "sqlite" else f"{column}::date"
        rows = bind.execute(
            sa.text(f"SELECT {day}, count(*) FROM grants WHERE {column} IS NOT NULL GROUP BY {day}")
        )
        for value, n in rows:
            counted.setdefault(dt.date.fromisoformat(str(value)[:10]), [0, 0])[index] = n
    if counted:
        op.bulk_insert(
            grant_days,
            [{"day": d, "granted": g, "revoked": r} for d, (g, r) in sorted(counted.items())],
        )


def downgrade() -> None:
    op.drop_table("grant_days")
