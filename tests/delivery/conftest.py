"""Fixtures: real targets on 127.0.0.1, targets configured in the database, a deliverer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from provisioning.audit.log import Origin, Source
from provisioning.delivery import targets
from provisioning.delivery.models import TargetKind
from provisioning.delivery.worker import Deliverer
from provisioning.settings import load

ADMIN = Origin(actor="test-admin", source=Source.ADMIN)


def add_target(database, kind: str, url: str, secret: str, **fields):
    fields.setdefault("connectors", None)
    fields.setdefault("max_attempts", 5)
    with database.transaction() as session:
        return targets.create(
            session,
            ADMIN,
            name=fields.pop("name", kind),
            kind=TargetKind(kind),
            url=url,
            secret=secret,
            **fields,
        )


@pytest.fixture
def webhook_target(database, receiver):
    return add_target(database, "webhook", receiver.url, receiver.secret)


@pytest.fixture
def scim_target(database, downstream):
    return add_target(database, "scim", downstream.url, "scim-token-0123456789")


@pytest.fixture
def settings(database):
    """Fast retries, so that a test sees several attempts in well under a second."""
    return load(
        database_url=str(database.engine.url.render_as_string(hide_password=False)),
        delivery_backoff_seconds=0.01,
        delivery_max_backoff_seconds=0.05,
        delivery_timeout_seconds=5,
    )


@pytest.fixture
def deliverer(database, settings) -> Iterator[Deliverer]:
    worker = Deliverer(database, settings)
    yield worker
    worker.stop()
