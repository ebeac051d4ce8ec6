"""The /metrics endpoint: process-wide counters plus gauges read from the database."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from provisioning.database import Database, utcnow
from provisioning.delivery import outbox
from provisioning.okta import inbox
from provisioning.schedule.models import JobOutcome, JobRun

metrics = Blueprint("metrics", __name__)

# Each job's latest successful run (one row per job, through the (job, started_at) index).
_latest = (
    select(JobRun.job, func.max(JobRun.started_at).label("started_at"))
    .where(JobRun.outcome == JobOutcome.SUCCEEDED, JobRun.finished_at.is_not(None))
    .group_by(JobRun.job)
    .subquery()
)
_LAST_SUCCESS = (
    select(JobRun.job, JobRun.started_at, JobRun.finished_at)
    .join(_latest, (JobRun.job == _latest.c.job) & (JobRun.started_at == _latest.c.started_at))
    .where(JobRun.outcome == JobOutcome.SUCCEEDED)
    .order_by(JobRun.job)
)


class DatabaseGauges(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self):
        try:
            with self.database.reader() as session:
                okta = inbox.depth(session)
                owed = outbox.depth(session)
                jobs = session.execute(_LAST_SUCCESS).all()
        except Exception:
            return
        now = utcnow()
        for name, help_, value in (
            ("okta_inbox_depth", "Okta deliveries stored, not yet applied", okta),
            ("outbox_depth", "Outbox messages not yet acknowledged by their target", owed.pending),
            ("outbox_dead_letters", "Outbox messages parked after too many attempts", owed.dead),
            (
                "outbox_oldest_age_seconds",
                "Age of the oldest message not yet acknowledged (0: none)",
                (now - owed.oldest_pending_at).total_seconds() if owed.oldest_pending_at else 0,
            ),
        ):
            gauge = GaugeMetricFamily(name, help_)
            gauge.add_metric([], value)
            yield gauge
        # Whichever worker led when a job ran, every replica shows it.
        last = GaugeMetricFamily(
            "job_last_success_timestamp_seconds",
            "When each job's last successful run ended, by any worker (Unix time)",
            labels=["job"],
        )
        took = GaugeMetricFamily(
            "job_last_success_duration_seconds",
            "How long each job's last successful run took, by any worker",
            labels=["job"],
        )
        for job, started, finished in jobs:
            last.add_metric([job], finished.timestamp())
            took.add_metric([job], (finished - started).total_seconds())
        yield last
        yield took


def registry_for(database: Database) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DatabaseGauges(database))
    return registry


@metrics.get("/metrics")
def scrape() -> Response:
    own = current_app.extensions["provisioning.metrics_registry"]
    body = generate_latest(REGISTRY) + generate_latest(own)
    # The content type as prometheus_client spells it (its charset included): as a
    # mimetype, Flask would add a second charset.
    return Response(body, content_type=CONTENT_TYPE_LATEST)
