"""System Log catch-up: events the hooks missed, applied through the same handler.

Polls ``GET /api/v1/logs`` for the event types the hooks handle and follows
Okta's ``next`` link rather than re-querying by time (Okta's guidance for
polling). Each page is applied in one transaction together with the new
cursor, so a crash either applies a page and moves past it, or does
neither. Events carry the same ``uuid`` as hook deliveries: one seen by both
is applied once. Each event is taken as a hook's is (:func:`events.take`),
bounded by the time its page was fetched: one that cannot be applied is
parked and the page goes on. A first poll starts 24 hours back.
"""

from __future__ import annotations

import datetime as dt

from provisioning.audit.log import Source
from provisioning.database import Database, utcnow
from provisioning.metrics import OKTA_EVENTS, OKTA_EVENTS_CLAMPED
from provisioning.okta import events, runs
from provisioning.okta.client import OktaClient, OktaError, logs_url
from provisioning.okta.models import SyncCursor, SyncRun
from provisioning.okta.reconcile import okta_time
from provisioning.settings import DEFAULTS, Settings

KIND = "catch-up"
CURSOR = "system-log"
FIRST_LOOKBACK = dt.timedelta(hours=24)


def catch_up(
    database: Database,
    client: OktaClient,
    *,
    max_pages: int = 1000,
    settings: Settings = DEFAULTS,
) -> SyncRun:
    """Apply every new System Log event; return the run's record."""
    requests_before = client.requests
    try:
        with runs.recorded(database, KIND) as run:
            counts = {"pages": 0, "events": 0}
            run.counts = counts
            with database.reader() as session:
                cursor = session.get(SyncCursor, CURSOR)
                url = cursor.next_url if cursor else None
            url = url or logs_url(
                client.org_url, okta_time(utcnow() - FIRST_LOOKBACK), sorted(events.HANDLED)
            )
            for _ in range(max_pages):
                page, next_url = client.log_page(url)
                fetched_at = utcnow()
                run.requests = client.requests - requests_before
                with database.transaction() as session:
                    taken = [
                        events.take(
                            session,
                            raw,
                            Source.OKTA_SYNC,
                            received_at=fetched_at,
                            settings=settings,
                        )
                        for raw in page
                    ]
                    if next_url:
                        session.merge(SyncCursor(name=CURSOR, next_url=next_url))
                for one in taken:
                    counts[one.name] = counts.get(one.name, 0) + 1
                    OKTA_EVENTS.labels(outcome=one.name).inc()
                counts["events"] += len(taken)
                if clamped := sum(one.clamped for one in taken):
                    counts["clamped"] = counts.get("clamped", 0) + clamped
                    OKTA_EVENTS_CLAMPED.labels(source=str(Source.OKTA_SYNC)).inc(clamped)
                counts["pages"] += 1
                if not page or not next_url:
                    break
                url = next_url
    except OktaError:
        pass  # recorded as failed; the caller reads the record
    return run
