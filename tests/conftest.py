"""Fixtures: a migrated database per test, on SQLite or on the PostgreSQL that DATABASE_URL names.

Without DATABASE_URL the suite runs on SQLite files. With a PostgreSQL
DATABASE_URL it runs there, in a schema of its own, and fails (never skips)
when that server cannot be reached.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from provisioning.audit.log import Origin, Source
from provisioning.audit.models import GENESIS_HASH
from provisioning.database import Database
from provisioning.settings import load
from provisioning.tables import metadata
from tests.delivery.servers import ScimServer, WebhookReceiver

CONFIGURED_URL = load().database_url if os.environ.get("DATABASE_URL") else None
ON_POSTGRES = bool(CONFIGURED_URL and CONFIGURED_URL.startswith("postgresql"))


def postgres_schema_url(base_url: str, schema: str) -> str:
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options=-csearch_path%3D{schema}"


class Databases:
    """Hands out empty, migrated databases of the configured kind."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.schemas: list[str] = []
        self.template: Path | None = None
        self.shared: Database | None = None

    def create_schema(self) -> str:
        assert CONFIGURED_URL is not None
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin = create_engine(CONFIGURED_URL)
        try:
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
        except Exception as exc:  # the suite must fail, not skip, without its database
            pytest.exit(f"PostgreSQL at {CONFIGURED_URL} cannot be used: {exc}", returncode=3)
        finally:
            admin.dispose()
        self.schemas.append(schema)
        return postgres_schema_url(CONFIGURED_URL, schema)

    def empty(self) -> Database:
        """A database with nothing in it, not even the schema."""
        if ON_POSTGRES:
            return Database(self.create_schema())
        return Database(f"sqlite:///{self.workdir / uuid.uuid4().hex}.db")

    def fresh(self) -> Database:
        """A migrated database with no rows but the genesis of the audit chain."""
        if ON_POSTGRES:
            if self.shared is None:
                self.shared = self.empty()
                self.shared.upgrade()
            else:
                self._truncate(self.shared)
            return self.shared
        if self.template is None:
            template = self.empty()
            template.upgrade()
            template.dispose()
            self.template = Path(template.engine.url.database)
        path = self.workdir / f"{uuid.uuid4().hex}.db"
        shutil.copyfile(self.template, path)
        return Database(f"sqlite:///{path}")

    @staticmethod
    def _truncate(database: Database) -> None:
        """Empty every table and restart its ids; the chain head goes back to the genesis.

        No trigger fires in this transaction (``session_replication_role = replica``; the
        test role is a superuser): the audit tables refuse exactly this, and with foreign
        keys unchecked the tables need no order. DELETE rather than TRUNCATE: on tables
        this small it takes 0.04 s, TRUNCATE of them 1 s.
        """
        with database.engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            for table in metadata.sorted_tables:
                if table.name != "audit_chain_head":
                    conn.execute(table.delete())
            sequences = conn.execute(
                text("SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()")
            ).scalars()
            for sequence in sequences.all():
                conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))
            conn.execute(
                text("UPDATE audit_chain_head SET last_event_id = 0, last_hash = :genesis"),
                {"genesis": GENESIS_HASH},
            )

    def close(self) -> None:
        if self.shared is not None:
            self.shared.dispose()
        if self.schemas:
            admin = create_engine(CONFIGURED_URL)
            with admin.begin() as conn:
                for schema in self.schemas:
                    conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            admin.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    pool = Databases(tmp_path_factory.mktemp("databases"))
    yield pool
    pool.close()


@pytest.fixture
def database(databases: Databases) -> Iterator[Database]:
    """An empty, migrated database for one test."""
    database = databases.fresh()
    yield database
    if not ON_POSTGRES:
        database.dispose()


@pytest.fixture
def fresh_database(databases: Databases) -> Callable[[], Database]:
    """For property tests: call it for an empty, migrated database per example."""
    return databases.fresh


@pytest.fixture
def origin() -> Origin:
    return Origin(actor="test-admin", source=Source.ADMIN)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1 that verifies signatures and dedupes by event id."""
    server = WebhookReceiver("whsec-test-0123456789")
    yield server
    server.stop()


@pytest.fixture
def downstream() -> Iterator[ScimServer]:
    """scim2-server's in-memory SCIM server on 127.0.0.1, a downstream target."""
    server = ScimServer("scim-token-0123456789")
    yield server
    server.stop()
