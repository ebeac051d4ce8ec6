"""Databases and bulk-loaded rows shared by the benchmarks."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text

from provisioning.connectors.models import Connector
from provisioning.database import Database, utcnow

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BATCH = 10_000


def postgres_schema_url(base_url: str, schema: str) -> str:
    """``base_url`` with its search path set to ``schema`` (as tests/conftest.py does)."""
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options=-csearch_path%3D{schema}"


@contextmanager
def sqlite_database() -> Iterator[Database]:
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        database = Database(f"sqlite:///{Path(workdir) / 'bench.db'}")
        try:
            database.upgrade()
            yield database
        finally:
            database.dispose()


@contextmanager
def postgres_database(base_url: str = DEFAULT_POSTGRES) -> Iterator[Database]:
    """A migrated database in a schema of its own, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        database = Database(postgres_schema_url(base_url, schema))
        try:
            database.upgrade()
            yield database
        finally:
            database.dispose()
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    finally:
        admin.dispose()


def database_for(kind: str, postgres_url: str = DEFAULT_POSTGRES):
    """A fresh migrated database: ``sqlite`` or ``postgresql``."""
    return sqlite_database() if kind == "sqlite" else postgres_database(postgres_url)


def database_arguments(parser: Any) -> None:
    """``--databases`` (which to run on, in order) and ``--postgres`` (the server's URL)."""
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)


def seeded_arguments(parser: Any) -> None:
    """``--url`` (the database), ``--seed`` (create and fill it, then stop), ``--users`` and
    ``--connectors``: the arguments of the in-process benches that compare two trees."""
    parser.add_argument("--url", required=True, help="database URL")
    parser.add_argument("--seed", action="store_true", help="create and fill the database")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--connectors", type=int, default=10)


def bulk(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), BATCH):
        conn.execute(insert(table), rows[start : start + BATCH])


def connector_row(slug: str, interfaces: tuple[str, ...] = ("web",)) -> dict[str, Any]:
    """An enabled, approved, read-write remote connector."""
    now = utcnow()
    return {
        "slug": slug,
        "name": f"Connector {slug}",
        "kind": "remote",
        "capability": "read_write",
        "publisher": "directory",
        "security_review": "approved",
        "data_classification": "internal",
        "interfaces": list(interfaces),
        "enabled": True,
        "unknown_action_policy": "needs_approval",
        "created_at": now,
        "updated_at": now,
    }


def connector_rows(count: int, prefix: str = "c") -> list[dict[str, Any]]:
    """Enabled, approved, read-write remote connectors."""
    return [connector_row(f"{prefix}{i}") for i in range(count)]


def insert_connector(conn: Any, slug: str, interfaces: tuple[str, ...] = ("web",)) -> int:
    """Insert :func:`connector_row` ``slug``; its id."""
    row = connector_row(slug, interfaces)
    return conn.execute(insert(Connector).values(**row).returning(Connector.id)).scalar_one()
