"""Alembic environment: migrates the engine the service hands it, or DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from provisioning.tables import metadata

config = context.config


def run() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from provisioning.settings import load

        engine = create_engine(load().database_url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run()
