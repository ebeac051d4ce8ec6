"""Migrations: the only way the schema is made, from empty, on the configured database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from provisioning.tables import metadata


def test_upgrade_from_empty_matches_the_models(databases):
    database = databases.empty()
    assert database.current() is None
    database.upgrade()
    assert database.current() == database.head()
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    database.dispose()


def test_downgrade_to_empty_and_back(databases):
    database = databases.empty()
    database.upgrade()
    database.downgrade("base")
    tables = set(inspect(database.engine).get_table_names()) - {"alembic_version"}
    assert tables == set()
    database.upgrade()
    assert set(metadata.tables) <= set(inspect(database.engine).get_table_names())
    database.dispose()
