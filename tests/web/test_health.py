"""Liveness, readiness and error shapes of the HTTP edge."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from apscheduler.events import EVENT_JOB_ERROR
from apscheduler.triggers.base import BaseTrigger
from prometheus_client.parser import text_string_to_metric_families

from jobs import runner
from provisioning import liveness
from provisioning.entitlements.mappings import create_mapping
from provisioning.settings import load
from provisioning.web.app import create_app
from tests.delivery.conftest import ADMIN, add_target
from tests.org import Org


def client_for(database):
    return create_app(load(database_url=database.url), database).test_client()


def test_healthz_and_readyz(database):
    client = client_for(database)
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["schema"] == database.head()


def test_readyz_is_503_problem_json_before_migrations(databases):
    database = databases.empty()
    response = client_for(database).get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == 503
    assert "expected" in response.json["detail"]
    database.dispose()


def test_unknown_path_and_method_are_problem_json(database):
    client = client_for(database)
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    assert missing.json["title"] == "Not Found"
    wrong = client.post("/healthz")
    assert wrong.status_code == 405
    assert "GET" in wrong.headers["Allow"]


# -- the background loops (provisioning.liveness) -----------------------------

# leader_poll_seconds: the job worker and its scheduler stall after 3 x POLL, a bound wide
# enough for a loaded machine's scheduling delays.
POLL = 0.5


def fast(database, **overrides):
    """Settings whose loops beat (and stall) within a second: see each loop's bound."""
    overrides = {
        "leader_poll_seconds": POLL,
        "delivery_poll_seconds": 0.1,
        "delivery_lease_seconds": 1,
        **overrides,
    }
    return load(database_url=database.url, **overrides)


def until(condition, what: str, within: float = 20):
    """Wait for ``condition()`` to hold; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        time.sleep(0.02)
    return value


def answered(client, status: int):
    def check():
        response = client.get("/readyz")
        return response if response.status_code == status else None

    return check


def states(response) -> dict[str, str]:
    """Each loop's state, as /readyz reports it."""
    return {loop["loop"]: loop["state"] for loop in response.json.get("loops", [])}


def alive(client) -> dict[str, float]:
    """background_alive by loop, from /metrics."""
    families = text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
    return {
        sample.labels["loop"]: sample.value
        for family in families
        if family.name == "background_alive"
        for sample in family.samples
    }


@pytest.fixture
def background(database):
    """Starts the jobs worker and the outbox deliverer as `serve` does; stops them after."""
    started = []

    def start(settings):
        started.append(runner.start_in_background(database, settings))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def test_an_app_without_background_loops_is_ready(database):
    """`serve --no-jobs`, or a gunicorn web worker without hooks: nothing of its own to judge."""
    response = client_for(database).get("/readyz")
    assert response.status_code == 200
    assert "jobs" not in states(response)


def test_an_app_running_its_background_jobs_stays_ready(database, background):
    settings = fast(database)
    client = create_app(settings, database, background=False).test_client()
    running = background(settings)
    assert running.worker.is_leader.wait(30)
    until(lambda: "scheduler" in states(client.get("/readyz")), "scheduler beats")
    time.sleep(2 * 3 * POLL)  # two stall bounds: only the heartbeats keep it ready
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    expected = {"jobs": "alive", "scheduler": "alive", "outbox-delivery": "alive"}
    assert expected.items() <= states(response).items()
    gauges = {"jobs": 1, "scheduler": 1, "outbox-delivery": 1}
    until(lambda: gauges.items() <= alive(client).items(), "background_alive 1 for each loop")


def test_a_job_worker_killed_by_a_bad_schedule_makes_readyz_503_naming_it(database, background):
    """The defect: a crontab the scheduler cannot read killed the job thread, and /readyz
    still answered 200. (Settings refuse it now; model_copy skips their validation.)"""
    settings = fast(database).model_copy(update={"schedule_outbox_prune": "30 4 * *"})
    client = create_app(settings, database, background=False).test_client()
    background(settings)
    response = until(answered(client, 503), "readyz 503 for the dead job thread")
    assert response.mimetype == "application/problem+json"
    assert response.json["detail"] == "background loop jobs has stopped (ValueError)"
    assert {"jobs": "stopped", "outbox-delivery": "alive"}.items() <= states(response).items()
    (jobs,) = [loop for loop in response.json["loops"] if loop["loop"] == "jobs"]
    assert jobs["error"] == "ValueError"
    assert alive(client)["jobs"] == 0


class _DiesOnSecondLook(BaseTrigger):
    """A trigger that computes its first fire time, then raises: the scheduler's own loop
    asks it again and dies of it (APScheduler lets that escape its thread)."""

    def __init__(self) -> None:
        self.looks = 0

    def get_next_fire_time(self, previous_fire_time, now):
        self.looks += 1
        if self.looks > 1:
            raise RuntimeError("this trigger cannot say when")
        return now


# The trigger's exception ends APScheduler's thread, and Python reports it (as it should).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_scheduler_whose_thread_died_makes_readyz_503_and_gives_up_leadership(
    database, background
):
    settings = fast(database)
    client = create_app(settings, database, background=False).test_client()
    running = background(settings)
    assert running.worker.is_leader.wait(30)
    scheduler = until(lambda: running.worker.scheduler, "a scheduler")
    scheduler.add_job(print, _DiesOnSecondLook(), id="broken")
    response = until(answered(client, 503), "readyz 503 for the dead scheduler")
    assert states(response)["scheduler"] == "stalled", response.json

    # The leader notices within its poll, gives up the lead and its loop ends, named.
    def gave_up():
        response = client.get("/readyz")
        gone = "jobs has stopped (SchedulerStopped)" in response.json["detail"]
        return response if gone else None

    response = until(gave_up, "the leader gives up")
    expected = {"jobs": "stopped", "scheduler": "stalled", "outbox-delivery": "alive"}
    assert expected.items() <= states(response).items()
    other = runner.Lock(database, "scheduler-leader")
    assert until(other.acquire, "leadership released")
    other.release()


def test_a_job_that_raises_does_not_stop_the_scheduler(database, background):
    settings = fast(database)
    client = create_app(settings, database, background=False).test_client()
    running = background(settings)
    assert running.worker.is_leader.wait(30)
    scheduler = until(lambda: running.worker.scheduler, "a scheduler")
    failed = threading.Event()
    scheduler.add_listener(lambda event: failed.set(), EVENT_JOB_ERROR)
    # run_job itself raises for a job it does not know (not a failed run: no job at all).
    scheduler.add_job(runner.run_job, args=(database, settings, "no-such-job"), id="raises")
    assert failed.wait(20)
    (beats,) = [loop for loop in liveness.loops() if loop.name == "scheduler"]
    after = time.monotonic()
    until(lambda: beats.beaten > after, "the scheduler beats after the failed job")
    assert client.get("/readyz").status_code == 200


def test_a_delivery_worker_that_stopped_makes_readyz_503_naming_it(database, background):
    settings = fast(database)
    client = create_app(settings, database, background=False).test_client()
    running = background(settings)
    until(answered(client, 200), "ready")
    # Its loop ends as if it had been stopped, but nobody stopped it (it is still registered).
    running.deliverer._stop.set()
    running.deliverer._wake.set()
    response = until(answered(client, 503), "readyz 503 for the stopped delivery worker")
    assert response.json["detail"] == (
        "background loop outbox-delivery has stopped (returned without being stopped)"
    )
    assert states(response)["outbox-delivery"] == "stopped"
    assert "stopped" not in {states(response)[name] for name in ("jobs", "scheduler")}
    assert alive(client)["outbox-delivery"] == 0


def test_a_delivery_round_stuck_past_the_lease_is_stalled(database, background):
    """A target that takes the connection and never answers holds a round for the whole HTTP
    timeout; past the lease (plus one poll) without a beat, the worker is named stalled."""
    silent = socket.create_server(("127.0.0.1", 0))  # listens; never accepts nor answers
    try:
        add_target(database, "webhook", f"http://127.0.0.1:{silent.getsockname()[1]}/", "s" * 24)
        with database.transaction() as session:
            org = Org(session, ADMIN)
            group = org.group()
            create_mapping(session, ADMIN, group, org.connector(), "read")
            org.join(org.user(), group)
        settings = fast(
            database, delivery_timeout_seconds=5, delivery_allowed_networks="127.0.0.1/32"
        )
        client = create_app(settings, database, background=False).test_client()
        background(settings)

        def delivery_stalled():
            response = client.get("/readyz")
            return response if states(response).get("outbox-delivery") == "stalled" else None

        response = until(delivery_stalled, "readyz 503 for the stuck round")
        assert response.status_code == 503
        assert "background loop outbox-delivery has not beaten for" in response.json["detail"]
        (delivery,) = [loop for loop in response.json["loops"] if loop["loop"] == "outbox-delivery"]
        assert delivery["stall_after_seconds"] == 1.1
    finally:
        silent.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork only")
def test_a_forked_worker_judges_none_of_its_parents_loops():
    """A gunicorn worker forked from a process that runs loops (--preload) runs none of them,
    so none of them can make its /readyz fail."""
    parents = liveness.Loop("parents-loop", stall_after=60).register()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and leave at once
        try:
            answer = repr([loop.name for loop in liveness.loops()]).encode()
        except BaseException as exc:
            answer = repr(exc).encode()[:1000]
        os.write(write, answer)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    try:
        with os.fdopen(read, "rb") as reply:
            assert reply.read() == b"[]"
        assert parents in liveness.loops()
    finally:
        parents.close()


def test_a_web_process_with_event_hooks_is_judged_on_its_inbox_processor(database):
    settings = fast(database, okta_hook_secrets="s3cret-current")
    app = create_app(settings, database)
    client = app.test_client()
    processor = app.extensions["provisioning.okta_inbox"]
    try:
        assert states(client.get("/readyz"))["okta-inbox"] == "alive"
        processor._stop.set()  # its loop ends, though nobody stopped it
        processor._wake.set()
        response = until(answered(client, 503), "readyz 503 for the stopped inbox processor")
        assert states(response)["okta-inbox"] == "stopped"
        assert "okta-inbox has stopped" in response.json["detail"]
    finally:
        processor.stop()
    assert "okta-inbox" not in states(client.get("/readyz"))
