"""Fixtures: real targets on 127.0.0.1, targets configured in the database, a deliverer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
from sqlalchemy import func, select

from provisioning.audit.log import Origin, Source
from provisioning.delivery import targets
from provisioning.delivery.egress import Egress
from provisioning.delivery.models import OutboxMessage, TargetKind
from provisioning.delivery.worker import Deliverer
from provisioning.settings import load

ADMIN = Origin(actor="test-admin", source=Source.ADMIN)
# The receivers of these tests listen on 127.0.0.1, which the egress policy allows only
# when told to (PROVISIONING_DELIVERY_ALLOWED_NETWORKS).
RECEIVERS = "127.0.0.1/32"
LOCAL = Egress((ip_network(RECEIVERS),))


def chat_target(session, origin: Origin) -> None:
    """A webhook target, so that the outbox keeps what it would tell (nothing delivers it
    in the test)."""
    targets.create(
        session,
        origin,
        name="chat",
        kind=TargetKind.WEBHOOK,
        url=targets.check_url("http://127.0.0.1:9/hook", LOCAL),
        secret="s" * 32,
        connectors=None,
        max_attempts=5,
    )


def add_target(database, kind: str, url: str, secret: str, **fields):
    fields.setdefault("connectors", None)
    fields.setdefault("max_attempts", 5)
    checked = targets.check_url(url, fields.pop("egress", LOCAL))
    with database.transaction() as session:
        return targets.create(
            session,
            ADMIN,
            name=fields.pop("name", kind),
            kind=TargetKind(kind),
            url=checked,
            secret=secret,
            **fields,
        )


def keep_delivering(deliverer, done, timeout: float = 15) -> None:
    """Rounds of delivery until ``done()`` holds (retries are due within milliseconds)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "delivery did not finish in time"
        if not deliverer.deliver_once().claimed:
            time.sleep(0.02)


def states(database) -> dict[str, int]:
    """How many outbox messages are in each state."""
    with database.reader() as session:
        rows = session.execute(
            select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
        )
        return {str(state): n for state, n in rows}


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
        delivery_allowed_networks=RECEIVERS,
    )


@pytest.fixture
def deliverer(database, settings) -> Iterator[Deliverer]:
    worker = Deliverer(database, settings)
    yield worker
    worker.stop()
