"""The job runner: runs recorded, one at a time, misfires caught up, one leader across workers."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select

from jobs import runner
from provisioning.database import Database, utcnow
from provisioning.schedule.models import JobOutcome, JobRun
from provisioning.settings import load
from tests.conftest import ON_POSTGRES


def settings_for(database, **overrides):
    return load(database_url=database.url, leader_poll_seconds=0.2, **overrides)


def runs(database) -> list[JobRun]:
    with database.reader() as session:
        return list(session.scalars(select(JobRun).order_by(JobRun.id)))


def test_a_run_is_recorded_with_its_counts(database):
    run = runner.run_job(database, settings_for(database), "stale-scan")
    assert run.outcome == JobOutcome.SUCCEEDED
    (stored,) = runs(database)
    assert stored.job == "stale-scan" and stored.trigger == "manual"
    assert "dormant_grant" in stored.counts and stored.finished_at >= stored.started_at


def test_a_failing_job_is_recorded_failed(database):
    settings = settings_for(database, okta_org_url="http://127.0.0.1:9", okta_allow_http=True)
    run = runner.run_job(database, settings, "okta-catch-up")
    assert run.outcome == JobOutcome.FAILED
    assert "Okta needs an API token" in run.error


def test_unknown_job():
    with pytest.raises(runner.UnknownJob, match="no job named 'nope'"):
        runner.job("nope")


def test_a_job_never_runs_twice_at_once(database):
    held = runner.Lock(database, "job-stale-scan")
    assert held.acquire()
    try:
        assert runner.run_job(database, settings_for(database), "stale-scan") is None
        assert runs(database) == []
    finally:
        held.release()
    assert runner.run_job(database, settings_for(database), "stale-scan") is not None


def test_a_missed_run_is_run_once_when_a_leader_starts(database):
    settings = settings_for(database)
    with database.transaction() as session:
        session.add(
            JobRun(
                job="stale-scan",
                trigger="schedule",
                outcome=JobOutcome.SUCCEEDED,
                counts={},
                started_at=utcnow() - dt.timedelta(days=2),
            )
        )
        session.add(
            JobRun(job="expiry", trigger="schedule", outcome=JobOutcome.SUCCEEDED, counts={})
        )
    assert runner.missed(database, settings) == ["stale-scan"]
    worker = runner.Worker(database, settings)
    stop = None
    try:
        import threading

        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not [r for r in runs(database) if r.trigger == "catch-up"]:
            assert time.monotonic() < deadline, "missed run not caught up"
            time.sleep(0.1)
        time.sleep(0.5)
        caught_up = [r for r in runs(database) if r.trigger == "catch-up"]
        assert [r.job for r in caught_up] == ["stale-scan"]
    finally:
        worker.stop()
        thread.join(10)
        del stop


def test_one_leader_among_workers_in_one_process(database):
    settings_for(database)
    first, second = runner.Lock(database, "leader-test"), runner.Lock(database, "leader-test")
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


class WorkerProcess:
    """A `provisioning worker` process whose stderr a thread watches: when it leads, when
    it is up, its error lines, every line."""

    def __init__(self, database, **env: str) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": database.url,
            "PROVISIONING_LEADER_POLL_SECONDS": "0.3",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "provisioning.cli", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.leading = threading.Event()
        self.led_at: float | None = None  # time.monotonic() when it said it leads
        self.up = threading.Event()
        self.errors: list[str] = []
        self.lines: list[str] = []
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if "is the scheduler leader" in line:
                self.led_at = time.monotonic()
                self.leading.set()
            if line.startswith("worker up"):
                self.up.set()
            if line.startswith("error: "):
                self.errors.append(line.strip())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def test_a_standby_worker_takes_over_when_the_leader_is_killed(databases):
    database = databases.empty()
    database.upgrade()
    first = WorkerProcess(database)
    second = None
    try:
        assert first.leading.wait(60), "first worker never led"
        second = WorkerProcess(database)
        assert not second.leading.wait(3), "two leaders at once"
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        killed = time.monotonic()
        assert second.leading.wait(60), "standby did not take over"
        assert time.monotonic() - killed < 60
    finally:
        first.stop()
        if second is not None:
            second.stop()
        database.dispose()


def test_watching_the_background_returns_the_loops_that_stopped(database):
    settings = settings_for(database, delivery_poll_seconds=0.1)
    background = runner.start_in_background(database, settings)
    try:
        assert background.worker.is_leader.wait(30)
        background.deliverer._stop.set()  # its loop ends, though nobody stopped it
        background.deliverer._wake.set()
        (fault,) = background.watch(threading.Event(), every=0.05)
        assert (fault.loop, fault.state) == ("outbox-delivery", "stopped")
    finally:
        background.stop()
    assert background.watch(_set(threading.Event())) == []


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event


@pytest.mark.skipif(ON_POSTGRES, reason="the leader lock is a file on SQLite only")
def test_the_worker_exits_with_status_1_naming_a_loop_that_died(databases):
    """A standby whose leadership lock cannot even be opened: its loop dies of it, and the
    process exits so that its supervisor starts it again."""
    database = databases.empty()
    database.upgrade()
    leader = runner.Lock(database, "scheduler-leader")
    assert leader.acquire()  # this test leads: the worker stands by, trying every 0.3 s
    worker = WorkerProcess(database)
    try:
        assert worker.up.wait(60), "worker never came up"
        lock_file = f"{database.engine.url.database}.scheduler-leader.lock"
        os.unlink(lock_file)
        os.mkdir(lock_file)  # opening it now fails: IsADirectoryError
        assert worker.process.wait(60) == 1
        assert worker.errors == ["error: background loop jobs has stopped (IsADirectoryError)"]
    finally:
        worker.stop()
        leader.release()
        database.dispose()


def test_a_worker_that_cannot_reach_its_database_keeps_trying(database):
    """A database outage is not a reason for the scheduler to die: its loop goes on beating
    and trying to take the lead."""
    unreachable = Database("postgresql://postgres@127.0.0.1:9/nowhere")
    worker = runner.Worker(unreachable, settings_for(database)).start()
    try:
        time.sleep(4 * 0.2)  # several passes, each failing to connect
        assert worker.loop.fault() is None
        assert not worker.is_leader.is_set()
    finally:
        worker.stop()
        unreachable.dispose()


def test_last_runs_are_each_jobs_latest_start(database):
    now = utcnow()
    with database.transaction() as session:
        for job, days_ago in [("expiry", 1), ("expiry", 3), ("stale-scan", 5), ("expiry", 2)]:
            session.add(
                JobRun(
                    job=job,
                    trigger="schedule",
                    outcome=JobOutcome.SUCCEEDED,
                    counts={"days_ago": days_ago},
                    started_at=now - dt.timedelta(days=days_ago),
                )
            )
    last = runner.last_runs(database)
    assert {job: run.counts["days_ago"] for job, run in last.items()} == {
        "expiry": 1,
        "stale-scan": 5,
    }
