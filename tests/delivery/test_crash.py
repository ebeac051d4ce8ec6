"""Crash safety: delivery workers SIGKILLed at random points lose nothing and apply nothing twice.

1,000 revocations are owed to a webhook receiver that, like any careful
receiver, dedupes by event id. `provisioning worker` processes are killed with
SIGKILL at random moments while delivering, then one is left to finish. Every
revocation must arrive (unique ids), each user's events must first arrive in
order, and the outbox must end with everything delivered.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict

from sqlalchemy import func, select

from provisioning.delivery.models import MessageState, OutboxMessage
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.offboarding import requests
from tests.delivery.conftest import ADMIN, RECEIVERS, add_target
from tests.org import Org

USERS, CONNECTORS = 100, 10  # 1,000 grants


def worker(database) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database.url,
        "PROVISIONING_DELIVERY_LEASE_SECONDS": "1",
        "PROVISIONING_DELIVERY_BACKOFF_SECONDS": "0.05",
        "PROVISIONING_DELIVERY_POLL_SECONDS": "0.1",
        "PROVISIONING_LEADER_POLL_SECONDS": "30",
        "PROVISIONING_DELIVERY_BATCH": "10",
        "PROVISIONING_DELIVERY_ALLOWED_NETWORKS": RECEIVERS,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "provisioning.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def delivered(database) -> int:
    with database.reader() as session:
        return session.scalar(
            select(func.count(OutboxMessage.id)).where(
                OutboxMessage.state == MessageState.DELIVERED
            )
        )


def test_sigkilled_workers_deliver_every_revocation_exactly_once_after_dedupe(database, receiver):
    with database.transaction() as session:
        org = Org(session, ADMIN)
        group = org.group()
        for n in range(CONNECTORS):
            create_mapping(session, ADMIN, group, org.connector(f"c{n}"), "read")
        for n in range(USERS):
            org.join(org.user(f"u{n}@example.com", employee_number=f"E{n}"), group)
    add_target(database, "webhook", receiver.url, receiver.secret, max_attempts=100)
    with database.transaction() as session:
        for n in range(USERS):
            requests.request(
                session, ADMIN, identified_by="employeeNumber", identifier=f"E{n}", reason="left"
            )
        revoked = set(session.scalars(select(Grant.id).where(Grant.revoked_at.is_not(None))))
        total = session.scalar(select(func.count(OutboxMessage.id)))
    assert len(revoked) == USERS * CONNECTORS and total == USERS * (CONNECTORS + 1)

    # Kill points spread over the run: after a random number of further events
    # reached the receiver (claims of 10 users' chains, ~110 messages, per
    # round), so kills land in claims, sends and settles alike.
    rng = random.Random(7)
    kills = 0
    for _ in range(8):
        process = worker(database)
        point = len(receiver.received) + rng.randint(1, 250)
        deadline = time.monotonic() + 60
        while len(receiver.received) < point and process.poll() is None:
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills += 1
    assert delivered(database) < total, "the kills came too late to test anything"

    survivor = worker(database)
    try:
        deadline = time.monotonic() + 90
        while delivered(database) < total:
            assert time.monotonic() < deadline, f"{delivered(database)}/{total} delivered"
            assert survivor.poll() is None, "the last worker died"
            time.sleep(0.2)
    finally:
        survivor.terminate()
        survivor.wait(10)

    unique = receiver.unique()
    revocations = [e for e in unique.values() if e["type"] == "grant.revoked"]
    assert len(revocations) == USERS * CONNECTORS
    assert {e["data"]["grant"]["id"] for e in revocations} == revoked
    assert len(unique) == total
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for event in receiver.received:
        if event["id"] not in seen:
            seen.add(event["id"])
            first_seen[event["data"]["user"]["id"]].append(event["sequence"])
    assert all(seq == sorted(seq) for seq in first_seen.values())
    # At least once: a kill between sending and settling repeats what was claimed, no more.
    assert receiver.repeats() <= kills * 10 * (CONNECTORS + 1)
