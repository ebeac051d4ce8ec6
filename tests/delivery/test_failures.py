"""Whatever fails in an attempt, it is an attempt: counted, kept, backed off, dead-lettered.

A sender that cannot be built, or that raises something other than an HTTP
error, must not stall the outbox: each attempt is counted and its error kept in
``last_error``, the message waits its backoff, dead-letters after the target's
``max_attempts`` and opens the ``dead_letters`` finding, like a 503 would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from http import HTTPStatus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from provisioning.database import utcnow
from provisioning.delivery.models import MessageState, OutboxMessage, Target, TargetKind
from provisioning.delivery.worker import Deliverer
from provisioning.entitlements.mappings import create_mapping
from provisioning.oversight.models import Finding, FindingKind
from provisioning.settings import load
from tests.delivery.conftest import ADMIN, RECEIVERS, add_target, states
from tests.org import Org


def errors_counted(target: str, kind: str) -> float:
    return REGISTRY.get_sample_value("delivery_errors_total", {"target": target, "kind": kind}) or 0


def insert_target(database, name: str, kind: str, url: str, max_attempts: int = 3) -> Target:
    """A target row as stored, without the checks of creation (as one kept from before them)."""
    with database.transaction() as session:
        target = Target(
            name=name,
            kind=TargetKind(kind),
            url=url,
            secret="secret-0123456789abcdef",
            connector_ids=None,
            enabled=True,
            max_attempts=max_attempts,
        )
        session.add(target)
        session.flush()
        return target


def owe(database, target: Target, payload: dict | None = None) -> int:
    """One message owed to ``target``: a grant for a new user, or ``payload`` as stored."""
    with database.transaction() as session:
        if payload is None:
            org, unique = Org(session, ADMIN), uuid.uuid4().hex[:12]
            group, connector = org.group(f"g-{unique}"), org.connector(f"c-{unique}")
            create_mapping(session, ADMIN, group, connector, "read")
            org.join(org.user(f"{unique}@example.com"), group)
        else:
            session.add(
                OutboxMessage(
                    event_id=uuid.uuid4(),
                    target_id=target.id,
                    user_id=uuid.uuid4(),
                    event_type="grant.created",
                    payload=payload,
                    state=MessageState.PENDING,
                    next_attempt_at=utcnow(),
                )
            )
        return session.scalar(
            select(func.max(OutboxMessage.id)).where(OutboxMessage.target_id == target.id)
        )


def message(database, message_id: int) -> OutboxMessage:
    with database.reader() as session:
        return session.get(OutboxMessage, message_id)


@pytest.fixture
def patient(database):
    """A worker whose retries wait a minute: a failed message is not due again in this test."""
    worker = Deliverer(
        database,
        load(
            database_url=database.url,
            delivery_backoff_seconds=60,
            delivery_max_backoff_seconds=60,
            delivery_timeout_seconds=5,
            delivery_allowed_networks=RECEIVERS,
        ),
    )
    yield worker
    worker.stop()


def fail_until_dead(database, worker: Deliverer, target: Target, message_id: int, expected: str):
    """Every attempt fails with ``expected`` in last_error, backs off, and the last dead-letters."""
    for attempt in range(1, target.max_attempts + 1):
        done = worker.deliver_once()
        assert (done.claimed, done.failed, done.delivered) == (1, 1, 0)
        failed = message(database, message_id)
        assert failed.attempts == attempt
        assert expected in failed.last_error
        assert failed.leased_until is None
        if attempt < target.max_attempts:
            assert failed.state == MessageState.PENDING
            assert failed.next_attempt_at > utcnow() + dt.timedelta(seconds=20)
            assert worker.deliver_once().claimed == 0  # it waits its backoff
            with database.transaction() as session:  # ... and the backoff runs out
                session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == message_id)
                    .values(next_attempt_at=utcnow() - dt.timedelta(seconds=1))
                )
        else:
            assert failed.state == MessageState.DEAD and done.dead == 1
    with database.reader() as session:
        finding = session.scalar(select(Finding).where(Finding.kind == FindingKind.DEAD_LETTERS))
    assert finding.state == "open" and finding.subject_id == str(target.id)


def test_a_sender_that_cannot_be_built_fails_attempts_until_the_message_dead_letters(
    database, patient
):
    # The HTTP client refuses this URL when the sender is built (the port is malformed).
    target = insert_target(database, "unbuildable", "scim", "http://[::1/v2")
    message_id = owe(database, target)
    before = errors_counted("unbuildable", "sender_error")

    fail_until_dead(database, patient, target, message_id, "InvalidURL")

    assert errors_counted("unbuildable", "sender_error") - before == 3


def test_a_sender_raising_something_other_than_an_http_error_fails_attempts_too(
    database, patient, downstream
):
    target = insert_target(database, "odd-payload", "scim", downstream.url)
    # A grant event without its grant: the sender fails before any request.
    message_id = owe(database, target, payload={"user": {}})
    before = errors_counted("odd-payload", "sender_error")

    fail_until_dead(database, patient, target, message_id, "KeyError")

    assert errors_counted("odd-payload", "sender_error") - before == 3
    assert downstream.groups() == []


def test_each_failed_attempt_is_one_warning_and_a_traceback_at_most_once(
    database, deliverer, caplog
):
    target = insert_target(database, "noisy", "scim", "http://[::1/v2", max_attempts=100)
    owe(database, target)
    caplog.set_level(logging.WARNING, logger="provisioning.delivery.worker")
    for _ in range(4):
        deliverer.deliver_once()
        time.sleep(0.06)  # past the 0.05 s backoff cap of these tests
    records = [r for r in caplog.records if r.name == "provisioning.delivery.worker"]
    assert len(records) == 4
    assert all(r.levelno == logging.WARNING and "noisy" in r.getMessage() for r in records)
    assert all("sender_error" in r.getMessage() for r in records)
    assert sum(r.exc_info is not None for r in records) <= 1


def silent_port() -> socket.socket:
    """A listening socket that never answers: connections are accepted by the kernel, then wait."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener


@pytest.mark.parametrize(
    ("case", "kind", "expected"),
    [
        ("refused", "connect", "ConnectError"),
        ("plain-http-over-tls", "tls", "SSL"),
        ("status", "http_status", "HTTP 503 Service Unavailable"),
        ("silent", "timeout", "ReadTimeout"),
    ],
)
def test_failures_are_counted_by_target_and_kind(database, receiver, case, kind, expected):
    url = receiver.url
    listener = None
    if case == "refused":
        receiver.stop()
    elif case == "plain-http-over-tls":
        url = url.replace("http://", "https://")
    elif case == "status":
        receiver.answer = 503
    elif case == "silent":
        listener = silent_port()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/events"
    target = add_target(database, "webhook", url, receiver.secret, name=case, max_attempts=10)
    message_id = owe(database, target)
    settings = load(
        database_url=database.url,
        delivery_timeout_seconds=0.3,
        delivery_allowed_networks=RECEIVERS,
    )
    worker = Deliverer(database, settings)
    before = errors_counted(case, kind)
    try:
        assert worker.deliver_once().failed == 1
    finally:
        worker.stop()
        if listener is not None:
            listener.close()
        if case == "refused":
            receiver.restart()
    failed = message(database, message_id)
    assert failed.attempts == 1 and expected in failed.last_error
    assert errors_counted(case, kind) - before == 1


def test_a_worker_without_its_http_library_counts_attempts_and_dead_letters(
    database, receiver, tmp_path
):
    """What the README's run command used to install: everything but httpx2."""
    shadow = tmp_path / "without-httpx2" / "httpx2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'httpx2'\", name='httpx2')\n"
    )
    target = add_target(database, "webhook", receiver.url, receiver.secret, max_attempts=2)
    owe(database, target)
    env = {
        **os.environ,
        "PYTHONPATH": str(shadow.parent),
        "DATABASE_URL": database.url,
        "PROVISIONING_DELIVERY_BACKOFF_SECONDS": "0.01",
        "PROVISIONING_DELIVERY_POLL_SECONDS": "0.1",
        "PROVISIONING_LEADER_POLL_SECONDS": "30",
        "PROVISIONING_DELIVERY_ALLOWED_NETWORKS": RECEIVERS,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "provisioning.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while states(database) != {"dead": 1}:
            assert worker.poll() is None, worker.stderr.read()
            assert time.monotonic() < deadline, states(database)
            time.sleep(0.1)
    finally:
        worker.terminate()
        _, log = worker.communicate(timeout=20)
    with database.reader() as session:
        dead = session.scalar(select(OutboxMessage))
        finding = session.scalar(select(Finding).where(Finding.kind == FindingKind.DEAD_LETTERS))
    assert dead.attempts == 2
    assert dead.last_error == "ModuleNotFoundError: No module named 'httpx2'"
    assert finding.state == "open" and finding.subject_id == str(target.id)
    assert receiver.received == []
    assert log.count("Traceback") <= 1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    status=st.integers(300, 599),
    phrase=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
    body=st.binary(max_size=4096),
)
def test_last_error_keeps_the_status_never_what_the_peer_said(
    database, receiver, patient, status, phrase, body
):
    with database.reader() as session:  # one target for every example
        target = session.scalar(select(Target).where(Target.name == "talkative"))
    if target is None:
        target = add_target(
            database, "webhook", receiver.url, receiver.secret, name="talkative", max_attempts=9
        )
    receiver.answer = f"{status} {phrase}".strip()
    receiver.refusal = body
    message_id = owe(database, target)

    assert patient.deliver_once().failed == 1

    kept = message(database, message_id).last_error
    expected = f"HTTP {status}"
    with contextlib.suppress(ValueError):  # a status with no standard phrase
        expected += f" {HTTPStatus(status).phrase}"
    if status < 400:
        expected += " (redirects are not followed)"
    assert kept == expected


def test_a_scim_refusal_keeps_its_status_not_the_servers_words(
    database, downstream, patient, receiver
):
    wrong_token = insert_target(database, "wrong-token", "scim", downstream.url)
    insert_target(database, "not-scim", "scim", receiver.url)
    owe(database, wrong_token)  # one message to each target
    assert patient.deliver_once().failed == 2
    with database.reader() as session:
        kept = dict(
            session.execute(
                select(Target.name, OutboxMessage.last_error).join(
                    Target, Target.id == OutboxMessage.target_id
                )
            ).all()
        )
    assert kept["wrong-token"] == "SCIM 401"
    # The webhook receiver answers "bad signature" to what it cannot verify.
    assert "401" in kept["not-scim"] and "signature" not in kept["not-scim"]
