"""Secrets the service generates for itself: random, stored once in the database, shared."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from provisioning.database import Database, utcnow
from provisioning.tokens.models import ServiceSecret

SCIM_CURSORS = "scim-cursors"
"""The key sealing SCIM paging cursors when PROVISIONING_SCIM_CURSOR_SECRET is not set."""

CONSOLE_SESSIONS = "console-sessions"
"""The key signing the console's session cookies when PROVISIONING_CONSOLE_SECRET_KEY is not
set."""

APPROVAL_BINDINGS = "approval-bindings"
"""The key signing requestable denials' binding tokens when PROVISIONING_APPROVAL_SECRET is
not set."""

_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def shared(database: Database, name: str) -> str:
    """The secret ``name``: 256 random bits, made on first use and stored, so that every
    replica of the service on the same database reads the same one.

    Race-safe: the first insert wins (``ON CONFLICT DO NOTHING``), and every process
    then reads back what is stored. Never derived from configuration.
    """
    table = ServiceSecret.__table__
    with database.engine.begin() as connection:
        stored = connection.scalar(select(table.c.value).where(table.c.name == name))
        if stored is not None:
            return stored
        insert = _INSERT[connection.dialect.name](table).on_conflict_do_nothing()
        connection.execute(
            insert, {"name": name, "value": secrets.token_hex(32), "created_at": utcnow()}
        )
    with database.engine.connect() as connection:
        return connection.scalar(select(table.c.value).where(table.c.name == name))
