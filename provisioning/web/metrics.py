"""The /metrics endpoint: process-wide counters plus gauges read from the database."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from provisioning.database import Database, utcnow
from provisioning.delivery import outbox
from provisioning.okta import inbox

metrics = Blueprint("metrics", __name__)


class DatabaseGauges(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self):
        try:
            with self.database.reader() as session:
                okta = inbox.depth(session)
                owed = outbox.depth(session)
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


def registry_for(database: Database) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DatabaseGauges(database))
    return registry


@metrics.get("/metrics")
def scrape() -> Response:
    own = current_app.extensions["provisioning.metrics_registry"]
    body = generate_latest(REGISTRY) + generate_latest(own)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)
