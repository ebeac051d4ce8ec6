"""System Log catch-up: events the hooks missed, applied through the same handler.

Polls ``GET /api/v1/logs`` for the event types the hooks handle and follows
Okta's ``next`` link rather than re-querying by time (Okta's guidance for
polling). Each page is applied in one transaction together with the new
cursor, so a crash either applies a page and moves past it, or does
neither. Events carry the same ``uuid`` as hook deliveries: one seen by both
is applied once. A first poll starts 24 hours back.
"""

from __future__ import annotations

import datetime as dt

from pydantic import ValidationError

from provisioning.audit.log import Source
from provisioning.database import Database, utcnow
from provisioning.okta import events, runs
from provisioning.okta.client import OktaClient, OktaError, logs_url
from provisioning.okta.models import SyncCursor, SyncRun
from provisioning.okta.reconcile import okta_time

KIND = "catch-up"
CURSOR = "system-log"
FIRST_LOOKBACK = dt.timedelta(hours=24)


def catch_up(database: Database, client: OktaClient, *, max_pages: int = 1000) -> SyncRun:
    """Apply every new System Log event; return the run's record."""
    requests_before = client.requests
    try:
        with runs.recorded(database, KIND) as run:
            counts = {"pages": 0, "events": 0, "invalid": 0}
            run.counts = counts
            with database.reader() as session:
                cursor = session.get(SyncCursor, CURSOR)
                url = cursor.next_url if cursor else None
            url = url or logs_url(
                client.org_url, okta_time(utcnow() - FIRST_LOOKBACK), sorted(events.HANDLED)
            )
            for _ in range(max_pages):
                page, next_url = client.log_page(url)
                run.requests = client.requests - requests_before
                with database.transaction() as session:
                    for raw in page:
                        try:
                            event = events.OktaEvent.model_validate(raw)
                        except ValidationError:
                            counts["invalid"] += 1
                            continue
                        outcome = events.apply(session, event, Source.OKTA_SYNC)
                        name = "duplicate" if outcome is None else str(outcome)
                        counts[name] = counts.get(name, 0) + 1
                        counts["events"] += 1
                    if next_url:
                        session.merge(SyncCursor(name=CURSOR, next_url=next_url))
                counts["pages"] += 1
                if not page or not next_url:
                    break
                url = next_url
    except OktaError:
        pass  # recorded as failed; the caller reads the record
    return run
