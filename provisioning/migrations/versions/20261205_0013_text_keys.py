"""Text keys: case-insensitive keys folded in Python; the service's shared secrets.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

``users.user_name_key`` was ``lower(user_name)``; it becomes the folded key of
:func:`provisioning.text.fold` (NFKC, case-folded), and ``users.display_name_key``,
``users.email_key`` and ``groups.display_name_key`` are added beside their values,
indexed, in place of the ``lower(...)`` expression indexes; and, unindexed (SCIM
filters compare them), the keys of givenName, familyName, employeeNumber and department.
Existing rows are backfilled here. Two live users whose userNames fold alike (``Straße`` and
``STRASSE``) cannot both hold the folded key: the older keeps it, and each later one gets
``<key>#duplicate-<id>``, so the upgrade never fails on data (the log names them: rename
them). A key longer than its column once folded (only SQLite could have held one) is cut
to it.

``service_secrets`` holds secrets the service generates for itself, shared by every
replica: the SCIM cursor key when ``PROVISIONING_SCIM_CURSOR_SECRET`` is not set.
"""

from __future__ import annotations

import logging
import unicodedata
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Keys compared by SCIM filters only, never looked up alone: no index.
UNINDEXED = ("given_name", "family_name", "employee_number", "department")
log = logging.getLogger("alembic.runtime.migration")


def _fold(value: str | None, limit: int) -> str | None:
    """provisioning.text.fold as of this revision (a migration keeps its own copy)."""
    if value is None:
        return None
    if value.isascii():
        return value.lower()[:limit]
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    return folded[:limit]


def upgrade() -> None:
    op.drop_index("ix_users_display_name_key", table_name="users")
    op.drop_index("ix_users_email_key", table_name="users")
    op.drop_index("ix_groups_display_name_key", table_name="groups")
    # Keys change places during the backfill (one user's new key may be another's old).
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_users_user_name_key",
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_name_key", sa.String(255), nullable=True))
        batch_op.add_column(sa.Column("email_key", sa.String(320), nullable=True))
        for name in UNINDEXED:
            batch_op.add_column(sa.Column(f"{name}_key", sa.String(255), nullable=True))
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_name_key", sa.String(255), nullable=True))

    bind = op.get_bind()
    users = sa.table(
        "users",
        sa.column("id"),
        sa.column("user_name"),
        sa.column("user_name_key"),
        sa.column("display_name"),
        sa.column("display_name_key"),
        sa.column("email"),
        sa.column("email_key"),
        sa.column("deleted_at"),
        sa.column("created_at"),
        *(sa.column(n) for n in UNINDEXED),
        *(sa.column(f"{n}_key") for n in UNINDEXED),
    )
    groups = sa.table(
        "groups", sa.column("id"), sa.column("display_name"), sa.column("display_name_key")
    )
    rows = bind.execute(
        sa.select(
            users.c.id,
            users.c.user_name,
            users.c.display_name,
            users.c.email,
            users.c.deleted_at,
            *(users.c[n] for n in UNINDEXED),
        ).order_by(users.c.created_at, users.c.id)
    ).all()
    taken: set[str] = set()
    for row in rows:
        key = _fold(row.user_name, 255)
        if row.deleted_at is None:
            if key in taken:
                key = f"{key[:200]}#duplicate-{uuid.UUID(str(row.id)).hex}"
                log.warning(
                    "user %s: its userName folds to the key of an older live user; "
                    "its key is now %r until it is renamed",
                    row.id,
                    key,
                )
            taken.add(key)
        values = {
            "user_name_key": key,
            "display_name_key": _fold(row.display_name, 255),
            "email_key": _fold(row.email, 320),
            **{f"{n}_key": _fold(getattr(row, n), 255) for n in UNINDEXED},
        }
        bind.execute(sa.update(users).where(users.c.id == row.id).values(**values))
    for row in bind.execute(sa.select(groups.c.id, groups.c.display_name)).all():
        bind.execute(
            sa.update(groups)
            .where(groups.c.id == row.id)
            .values(display_name_key=_fold(row.display_name, 255))
        )

    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.alter_column("display_name_key", existing_type=sa.String(255), nullable=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(
            "uq_users_user_name_key",
            ["user_name_key"],
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )
    op.create_index("ix_users_display_name_key", "users", ["display_name_key"])
    op.create_index("ix_users_email_key", "users", ["email_key"])
    op.create_index("ix_groups_display_name_key", "groups", ["display_name_key"])

    op.create_table(
        "service_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("service_secrets")
    op.drop_index("ix_groups_display_name_key", table_name="groups")
    op.drop_index("ix_users_email_key", table_name="users")
    op.drop_index("ix_users_display_name_key", table_name="users")
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.drop_column("display_name_key")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("email_key")
        for name in UNINDEXED:
            batch_op.drop_column(f"{name}_key")
        batch_op.drop_column("display_name_key")
    op.execute("UPDATE users SET user_name_key = lower(user_name)")
    op.create_index("ix_users_display_name_key", "users", [sa.text("lower(display_name)")])
    op.create_index("ix_users_email_key", "users", [sa.text("lower(email)")])
    op.create_index("ix_groups_display_name_key", "groups", [sa.text("lower(display_name)")])
