"""The job runner: runs recorded, one at a time, misfires caught up, one leader across workers."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from jobs import runner
from provisioning.database import utcnow
from provisioning.oversight.models import JobOutcome, JobRun
from provisioning.settings import load


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
    settings = settings_for(database, okta_org_url="http://127.0.0.1:9")
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


def _worker(database) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database.url,
        "PROVISIONING_LEADER_POLL_SECONDS": "0.3",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "provisioning.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _leader_line(process: subprocess.Popen, timeout: float) -> bool:
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            line = process.stderr.readline()
            if "is the scheduler leader" in line:
                return True
            if not line:
                return False
    return False


def test_a_standby_worker_takes_over_when_the_leader_is_killed(databases):
    database = databases.empty()
    database.upgrade()
    first = _worker(database)
    try:
        assert _leader_line(first, 60), "first worker never led"
        second = _worker(database)
        try:
            assert not _leader_line(second, 2), "two leaders at once"
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            started = time.monotonic()
            assert _leader_line(second, 60), "standby did not take over"
            assert time.monotonic() - started < 60
        finally:
            second.terminate()
            second.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        database.dispose()
