"""Running jobs: one at a time per job, recorded, and scheduled by a single leader.

Every run is a ``job_runs`` row. A job never runs twice at once, across
processes: a run first takes a per-job lock (a PostgreSQL advisory lock, or
a lock file beside the SQLite database) and is skipped if another holds it.

Of several workers sharing a database exactly one schedules: the leader,
holding a session-level advisory lock on PostgreSQL (a lock file on SQLite)
for as long as its process lives. Standbys try to take over every
half second (``STANDBY_RETRY_SECONDS``); a leader stopped with SIGTERM gives
its lock up before waiting for the runs still going, and when a leader dies
its lock goes with its connection (or file descriptor): either way a standby
takes over within a second. APScheduler runs
the schedule in the leader only, from an in-memory job store (a shared job
store would run jobs once per process). A run missed while no leader was up
is run once when a leader starts (coalesced), judged from ``job_runs``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from jobs.registry import JOBS, Job
from provisioning import liveness
from provisioning.database import Database, FileLock, utcnow
from provisioning.delivery.worker import Deliverer
from provisioning.metrics import JOB_SECONDS, SCHEDULER_LEADER
from provisioning.schedule.models import JobOutcome, JobRun
from provisioning.settings import Settings

log = logging.getLogger(__name__)


class UnknownJob(KeyError):
    def __str__(self) -> str:
        return f"no job named {self.args[0]!r}; jobs: {', '.join(sorted(JOBS))}"


def _key(name: str) -> int:
    """A stable 63-bit advisory lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1


class Lock:
    """A lock across processes that never waits: a PostgreSQL session advisory lock, or a
    :class:`~provisioning.database.FileLock` beside the SQLite database."""

    def __init__(self, database: Database, name: str) -> None:
        self.database, self.name = database, name
        self._held: Any = None

    def acquire(self) -> bool:
        if self.database.dialect == "postgresql":
            connection = self.database.engine.connect()
            got = connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _key(self.name)})
            connection.commit()
            if got:
                self._held = connection
                return True
            connection.close()
            return False
        path = self.database.engine.url.database or "provisioning.db"
        handle = FileLock(f"{path}.{self.name}.lock")
        if not handle.acquire(blocking=False):
            return False
        self._held = handle
        return True

    def alive(self) -> bool:
        """Still held (on PostgreSQL: its connection still answers)."""
        if self._held is None:
            return False
        if self.database.dialect != "postgresql":
            return True
        try:
            self._held.scalar(text("SELECT 1"))
            self._held.commit()
            return True
        except Exception:
            return False

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if self.database.dialect == "postgresql":
            try:
                held.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(self.name)})
                held.commit()
            except Exception:  # a lost connection holds no lock any more
                log.info("lock %s: its connection was lost; nothing to release", self.name)
            finally:
                held.close()
        else:
            held.release()


def job(name: str) -> Job:
    try:
        return JOBS[name]
    except KeyError:
        raise UnknownJob(name) from None


def run_job(
    database: Database,
    settings: Settings,
    name: str,
    *,
    trigger: str = "manual",
    progress: Callable[[str, int, int], None] | None = None,
) -> JobRun | None:
    """Run a job now and record it; None if it is already running somewhere."""
    spec = job(name)
    lock = Lock(database, f"job-{name}")
    if not lock.acquire():
        log.info("job %s is already running elsewhere; skipped", name)
        return None
    try:
        with database.transaction() as session:
            run = JobRun(job=name, trigger=trigger, outcome=JobOutcome.RUNNING, counts={})
            session.add(run)
        started = time.perf_counter()
        try:
            counts = spec.run(database, settings, progress or (lambda *_: None))
            run.outcome, run.counts = JobOutcome.SUCCEEDED, _plain(counts)
        except Exception as exc:
            log.exception("job %s failed", name)
            run.outcome, run.error = JobOutcome.FAILED, f"{type(exc).__name__}: {exc}"
        run.finished_at = utcnow()
        JOB_SECONDS.labels(job=name, outcome=str(run.outcome)).observe(
            time.perf_counter() - started
        )
        with database.transaction() as session:
            session.merge(run)
        return run
    finally:
        lock.release()


def _plain(counts: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(counts, default=str))


def last_runs(database: Database) -> dict[str, JobRun]:
    """Each job's latest run, read through the (job, started_at) index: not the history,
    which grows by thousands of runs a day and is read whenever a leader starts."""
    latest = (
        select(JobRun.job, func.max(JobRun.started_at).label("started_at"))
        .group_by(JobRun.job)
        .subquery()
    )
    with database.reader() as session:
        runs = session.scalars(
            select(JobRun)
            .join(latest, (JobRun.job == latest.c.job) & (JobRun.started_at == latest.c.started_at))
            .order_by(JobRun.id)
        ).all()
    return {run.job: run for run in runs}


def trigger_for(spec: Job, settings: Settings) -> CronTrigger:
    return CronTrigger.from_crontab(spec.schedule(settings), timezone="UTC")


def missed(database: Database, settings: Settings) -> list[str]:
    """Jobs whose scheduled time passed since their last run (to run once now)."""
    now = utcnow()
    late = []
    for name, run in last_runs(database).items():
        spec = JOBS.get(name)
        if spec is None or not spec.enabled(settings):
            continue
        due = trigger_for(spec, settings).get_next_fire_time(None, run.started_at)
        if due is not None and due <= now:
            late.append(name)
    return late


# How often a standby tries the leader lock: one query (or one file lock) a try, so often
# enough that a leader that stops or dies is replaced within a second.
STANDBY_RETRY_SECONDS = 0.5


class SchedulerStopped(RuntimeError):
    """The leader's scheduler stopped running its jobs (its heartbeat job fell silent)."""


class Worker:
    """Waits for leadership, then runs the schedule until stopped or leadership is lost.

    Two loops beat (:mod:`provisioning.liveness`): ``jobs``, this worker's own
    loop, on every pass as a standby or a leader; and, while it leads,
    ``scheduler``, from a heartbeat job that the scheduler runs every
    ``leader_poll_seconds`` on an executor of its own (so long jobs cannot
    starve it). Each is stalled after three of those intervals without a beat.
    A leader whose scheduler fell silent (its thread died) gives up leadership
    and its loop ends with :class:`SchedulerStopped`: the process must be
    restarted, and meanwhile a standby takes over.
    """

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database, self.settings = database, settings
        self.leadership = Lock(database, "scheduler-leader")
        self.stopping = threading.Event()
        self.is_leader = threading.Event()
        self.loop = liveness.Loop("jobs", stall_after=3 * settings.leader_poll_seconds)
        self.scheduler: BackgroundScheduler | None = None  # while leading
        self._silent: liveness.Loop | None = None  # a scheduler that fell silent
        self._thread: threading.Thread | None = None

    def start(self) -> Worker:
        """Run in a daemon thread of this process (see :meth:`stop`)."""
        self._thread = self.loop.start(self.run)
        return self

    def run(self) -> None:
        """Until stopped. A pass that could not reach the database is tried again at the
        next poll; any other exception ends the loop (it would fail the same way again)."""
        while not self.stopping.is_set():
            self.loop.beat()
            try:
                if self.leadership.acquire():
                    log.warning("worker %s is the scheduler leader", os.getpid())
                    self.is_leader.set()
                    SCHEDULER_LEADER.set(1)
                    try:
                        self._lead()
                    finally:
                        self._step_down()
            except OperationalError as exc:
                log.error("scheduler: the database cannot be used (%s); trying again", exc.orig)
            self.stopping.wait(min(self.settings.leader_poll_seconds, STANDBY_RETRY_SECONDS))

    def _step_down(self) -> None:
        """Give up leadership (again: idempotent), so that a standby takes over."""
        if self.is_leader.is_set():
            log.warning("worker %s gives up the scheduler leadership", os.getpid())
        self.is_leader.clear()
        SCHEDULER_LEADER.set(0)
        self.leadership.release()

    def _lead(self) -> None:
        poll = self.settings.leader_poll_seconds
        scheduler = BackgroundScheduler(
            timezone="UTC",
            executors={"default": ThreadPoolExecutor(), "heartbeat": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        for name, spec in JOBS.items():
            if spec.enabled(self.settings):
                scheduler.add_job(
                    run_job,
                    trigger_for(spec, self.settings),
                    args=(self.database, self.settings, name),
                    kwargs={"trigger": "schedule"},
                    id=name,
                    replace_existing=True,
                )
        beats = liveness.Loop("scheduler", stall_after=3 * poll)
        scheduler.add_job(
            beats.beat, "interval", seconds=poll, id="heartbeat", executor="heartbeat"
        )
        scheduler.start()
        beats.register()
        self.scheduler = scheduler
        try:
            for name in missed(self.database, self.settings):
                log.warning("job %s missed its schedule; running it once now", name)
                scheduler.add_job(
                    run_job,
                    args=(self.database, self.settings, name),
                    kwargs={"trigger": "catch-up"},
                    id=f"{name}-catch-up",
                )
            while not self.stopping.wait(poll):
                self.loop.beat()
                if (fault := beats.fault()) is not None:
                    # Judged at fault until this worker is stopped, beside its own loop.
                    self._silent = beats
                    raise SchedulerStopped(f"{fault}; leadership given up")
                if not self.leadership.alive():
                    log.error("scheduler leadership lost; standing by")
                    return
        finally:
            self.scheduler = None
            # No new runs; leadership goes at once (runs still going keep their job
            # locks, so the new leader cannot start them twice); then wait for them.
            scheduler.pause()
            try:
                self._step_down()
            finally:
                scheduler.shutdown(wait=True)
            if beats is not self._silent:
                beats.close()
            self.loop.beat()

    def stop(self, timeout: float = 30) -> None:
        self.loop.close()
        if self._silent is not None:
            self._silent.close()
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)


@dataclass
class Background:
    """The job worker and an outbox deliverer, running in daemon threads of this process."""

    worker: Worker
    deliverer: Deliverer

    def watch(self, stopping: threading.Event, every: float = 1.0) -> list[liveness.Status]:
        """Wait until ``stopping`` is set ([]) or a loop of this process has stopped (those).

        A stalled loop is logged when it starts stalling, but not returned: a
        stall can end by itself (a slow target, a lock wait), a stopped loop
        cannot.
        """
        stalled: set[str] = set()
        while not stopping.wait(every):
            faults = liveness.faults()
            if stopped := [fault for fault in faults if fault.state == "stopped"]:
                return stopped
            for fault in faults:
                if fault.loop not in stalled:
                    log.error("%s", fault)
            stalled = {fault.loop for fault in faults}
        return []

    def stop(self) -> None:
        """No new delivery round; leadership given up at once; then both wound down."""
        self.deliverer.halt()
        self.worker.stop()
        self.deliverer.stop()


def start_in_background(database: Database, settings: Settings) -> Background:
    """Run a worker and an outbox deliverer in daemon threads of this process."""
    return Background(Worker(database, settings).start(), Deliverer(database, settings).start())
