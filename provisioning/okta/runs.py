"""Recording Okta sync runs: started, finished, counts, drift, requests, errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select

from provisioning.database import Database, utcnow
from provisioning.okta.models import RunStatus, SyncRun

DRIFT_KEPT = 1000  # entries kept per drift list in a run record


@contextmanager
def recorded(database: Database, kind: str, **fields: Any) -> Iterator[SyncRun]:
    """A run row committed at start, and again (succeeded or failed) at the end.

    The body fills ``run.counts``, ``run.drift`` and ``run.requests``; an
    exception marks the run failed with its message and is raised again.
    """
    with database.transaction() as session:
        run = SyncRun(kind=kind, counts={}, drift={}, **fields)
        session.add(run)
    try:
        yield run
    except Exception as exc:
        _finish(database, run, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    _finish(database, run, RunStatus.SUCCEEDED, run.error)


def _finish(database: Database, run: SyncRun, status: RunStatus, error: str | None) -> None:
    run.status, run.finished_at, run.error = status, utcnow(), error
    run.drift = {k: list(v)[:DRIFT_KEPT] for k, v in run.drift.items()}
    with database.transaction() as session:
        session.merge(run)


def last_success(database: Database, kind: str) -> SyncRun | None:
    with database.reader() as session:
        return session.scalar(
            select(SyncRun)
            .where(SyncRun.kind == kind, SyncRun.status == RunStatus.SUCCEEDED)
            .order_by(SyncRun.started_at.desc())
            .limit(1)
        )


def recent(database: Database, limit: int = 20) -> list[SyncRun]:
    with database.reader() as session:
        return list(session.scalars(select(SyncRun).order_by(SyncRun.id.desc()).limit(limit)))


def as_json(run: SyncRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "kind": run.kind,
        "mode": run.mode,
        "dry_run": run.dry_run,
        "status": str(run.status),
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "counts": run.counts,
        "drift": run.drift,
        "requests": run.requests,
        "error": run.error,
    }
