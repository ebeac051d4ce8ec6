"""`provisioning worker` and `provisioning jobs list|run`, added to the command by entry point.

The runner and the jobs (the whole domain) are imported when a command runs, not when
``provisioning --help`` lists the commands."""

from __future__ import annotations

import json
import signal
import threading

import click

from provisioning.cli import Context, _fail, _progress, pass_context


@click.command()
@click.option(
    "--metrics-port",
    type=int,
    envvar="PROVISIONING_WORKER_METRICS_PORT",
    help="Serve this worker's /metrics (heartbeats, leadership, deliveries, job runs) here.",
)
@pass_context
def worker(ctx: Context, metrics_port: int | None) -> None:
    """Deliver the outbox, and run the schedule when this worker is the leader, until stopped.

    Every worker delivers (they share the outbox); one at a time runs the schedule.
    When one of its loops has stopped (its thread died), the worker exits with
    status 1 naming it, so that whatever supervises it starts it again. SIGTERM stops
    it gracefully: it gives up the leadership at once (a standby leads within a
    second), finishes the sends under way and hands back the rest of its claims.
    """
    from jobs import runner
    from jobs.registry import JOBS
    from provisioning import logs

    settings = ctx.settings
    logs.configure(settings.log_level, settings.log_format)
    database = ctx.migrated()
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    background = runner.start_in_background(database, settings)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    click.echo(
        "worker up; schedules: "
        + ", ".join(
            f"{name} [{spec.schedule(settings)}]"
            for name, spec in JOBS.items()
            if spec.enabled(settings)
        ),
        err=True,
    )
    faults = []
    try:
        faults = background.watch(stopping)
    except KeyboardInterrupt:
        pass
    finally:
        background.stop()
    if faults:
        _fail("; ".join(str(fault) for fault in faults))


@click.group()
def jobs() -> None:
    """Scheduled jobs: what exists, when it last ran, run one now."""


@jobs.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def jobs_list(ctx: Context, as_json: bool) -> None:
    """Every job, its schedule and its last run."""
    from jobs import runner
    from jobs.registry import JOBS

    settings = ctx.settings
    last = runner.last_runs(ctx.migrated())
    rows = []
    for name, spec in JOBS.items():
        run = last.get(name)
        rows.append(
            {
                "job": name,
                "schedule": spec.schedule(settings) if spec.enabled(settings) else None,
                "description": spec.description,
                "last_run": None
                if run is None
                else {
                    "started_at": run.started_at.isoformat(),
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                    "outcome": str(run.outcome),
                    "trigger": run.trigger,
                    "counts": run.counts,
                    "error": run.error,
                },
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        schedule = row["schedule"] or "not configured"
        run = row["last_run"]
        last_text = "never run" if run is None else f"{run['outcome']} at {run['started_at'][:19]}"
        click.echo(f"{row['job']:<28} {schedule:<16} {last_text:<34} {row['description']}")


@jobs.command("run")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def jobs_run(ctx: Context, name: str, as_json: bool) -> None:
    """Run one job now, in the foreground."""
    from jobs import runner
    from jobs.registry import JOBS

    if name not in JOBS:
        _fail(str(runner.UnknownJob(name)), 2)
    database = ctx.migrated()
    with _progress(not as_json) as progress:
        run = runner.run_job(database, ctx.settings, name, trigger="manual", progress=progress)
    if run is None:
        _fail(f"job {name} is already running elsewhere")
    summary = {
        "job": name,
        "outcome": str(run.outcome),
        "counts": run.counts,
        "error": run.error,
        "seconds": round((run.finished_at - run.started_at).total_seconds(), 3),
    }
    click.echo(json.dumps(summary, indent=None if as_json else 2))
    if run.outcome != "succeeded":
        _fail(f"job {name} failed: {run.error}")
