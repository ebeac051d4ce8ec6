"""SIGTERM stops a `provisioning worker` gracefully: during a delivery burst it loses
nothing (the sends under way finish, the rest of its claims go back at once), and it
gives up the scheduler leadership before it waits, so the standby leads within a second,
not after a poll interval."""

from __future__ import annotations

import json
import signal
import time

from provisioning.delivery import outbox
from tests.delivery.conftest import RECEIVERS, add_target, states
from tests.jobs.test_runner import WorkerProcess

BURST = 150


def worker(database) -> WorkerProcess:
    return WorkerProcess(
        database,
        # The takeover must not wait for a poll: the default interval, 15 s.
        PROVISIONING_LEADER_POLL_SECONDS="15",
        PROVISIONING_DELIVERY_POLL_SECONDS="0.1",
        PROVISIONING_DELIVERY_BATCH="5",
        PROVISIONING_DELIVERY_ALLOWED_NETWORKS=RECEIVERS,
        PROVISIONING_LOG_FORMAT="json",
    )


def test_sigterm_during_a_burst_loses_nothing_and_the_standby_leads_at_once(database, receiver):
    add_target(database, "webhook", receiver.url, receiver.secret)
    receiver.delay = 0.01  # one chain of BURST events: about BURST x 10 ms of sending
    first = worker(database)
    second = None
    try:
        assert first.leading.wait(60), "".join(first.lines)
        second = worker(database)
        assert second.up.wait(60), "".join(second.lines)
        assert not second.leading.wait(1), "two leaders at once"
        with database.transaction() as session:
            outbox.enqueue(
                session,
                [outbox.Event("review.deadline", outbox.SERVICE, {"n": n}) for n in range(BURST)],
            )
        deadline = time.monotonic() + 30
        while len(receiver.unique()) < 10:
            assert time.monotonic() < deadline, "the burst did not start"
            time.sleep(0.01)

        first.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert first.process.wait(30) == 0, "".join(first.lines)
        assert second.leading.wait(10), "the standby did not take over"
        takeover = second.led_at - signalled
        print(f"standby led {takeover:.3f} s after SIGTERM to the leader")
        assert takeover < 5  # well below the 15 s poll interval (about 0.5 s measured)
        assert any("gives up the scheduler leadership" in line for line in first.lines)
        # Every line the worker logged is a JSON line.
        logged = [json.loads(line) for line in first.lines if line.startswith("{")]
        assert logged and all({"time", "level", "logger", "message"} <= set(x) for x in logged)

        deadline = time.monotonic() + 60
        while states(database).get("delivered", 0) < BURST:
            assert time.monotonic() < deadline, states(database)
            time.sleep(0.05)
        assert states(database) == {"delivered": BURST}
        assert sorted(e["data"]["n"] for e in receiver.unique().values()) == list(range(BURST))
    finally:
        first.stop()
        if second is not None:
            second.stop()
