"""The jobs the service runs on a schedule: each a name, a schedule setting and a function."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from provisioning.audit import checkpoints
from provisioning.audit.log import Origin, Source
from provisioning.database import Database, utcnow
from provisioning.delivery import outbox
from provisioning.entitlements.expiry import expire, remind
from provisioning.offboarding.requests import execute_due
from provisioning.okta import inbox
from provisioning.okta.catchup import catch_up
from provisioning.okta.client import OktaError, from_settings
from provisioning.okta.reconcile import reconcile
from provisioning.okta.writeback import write_back_offboardings
from provisioning.oversight.remediation import remediate
from provisioning.oversight.scan import scan
from provisioning.requests import workflow
from provisioning.reviews import campaigns
from provisioning.reviews.models import CampaignTrigger, NoResponse
from provisioning.settings import Settings

Progress = Callable[[str, int, int], None]


class JobFailed(Exception):
    """A job ran and reported failure (its message says why)."""


@dataclass(frozen=True)
class Job:
    name: str
    setting: str  # the Settings field holding its crontab
    run: Callable[[Database, Settings, Progress], dict[str, Any]]
    description: str
    needs_okta: bool = False
    needs_writeback: bool = False
    needs_signing_key: bool = False

    def schedule(self, settings: Settings) -> str:
        return getattr(settings, self.setting)

    def enabled(self, settings: Settings) -> bool:
        if self.needs_writeback and not settings.okta_writeback:
            return False
        if self.needs_signing_key and not settings.audit_signing_key:
            return False
        return not self.needs_okta or bool(settings.okta_org_url)


def _origin(name: str) -> Origin:
    return Origin(actor=f"job:{name}", source=Source.JOB)


def _stale_scan(database: Database, settings: Settings, progress: Progress) -> dict[str, Any]:
    started = utcnow()
    with database.transaction() as session:
        counts = scan(session, dormant_days=settings.dormant_after_days)
        counts["remediation"] = remediate(session, _origin("stale-scan"), opened_since=started)
        return counts


def _expiry(database: Database, settings: Settings, progress: Progress) -> dict[str, Any]:
    with database.transaction() as session:
        counts = expire(session, _origin("expiry"))
        counts["requests_lapsed"] = workflow.lapse(session, _origin("expiry"))
        counts["reminded"] = remind(session, dt.timedelta(days=settings.reminder_days))
        return counts


def _outbox_prune(database: Database, settings: Settings, progress: Progress) -> dict[str, Any]:
    with database.transaction() as session:
        retention = dt.timedelta(days=settings.delivery_retention_days)
        return {"pruned": outbox.prune(session, older_than=retention)}


def _offboardings(database: Database, settings: Settings, progress: Progress) -> dict[str, Any]:
    with database.transaction() as session:
        return execute_due(session, _origin("offboardings"))


def _reviews(database: Database, settings: Settings, progress: Progress) -> dict[str, Any]:
    """The scheduled campaign, if the schedule fell due since the last one; then closing."""
    now = utcnow()
    counts: dict[str, Any] = {"created": None}
    with database.transaction() as session:
        last = campaigns.last_created(session, CampaignTrigger.SCHEDULE)
        schedule = CronTrigger.from_crontab(settings.schedule_reviews, timezone="UTC")
        if last is None or schedule.get_next_fire_time(None, last) <= now:
            campaign = campaigns.create_campaign(
                session,
                _origin("reviews"),
                name=f"Access review {now:%Y-%m-%d}",
                trigger=CampaignTrigger.SCHEDULE,
                deadline=now + dt.timedelta(days=settings.review_deadline_days),
                no_response=NoResponse(settings.review_no_response),
                now=now,
            )
            counts.update(created=campaign.id, items=campaign.counts["items"])
    return {**counts, **_close_reviews(database, settings, progress)}


def _close_reviews(database: Database, settings: Settings, progress: Progress) -> dict[str, Any]:
    """Close every campaign past its deadline, each in its own transaction."""
    with database.reader() as session:
        due = campaigns.due(session)
    with database.transaction() as session:
        reminded = campaigns.remind(session, dt.timedelta(days=settings.reminder_days))
    closed = []
    for n, campaign_id in enumerate(due):
        progress("closing review campaigns", n, len(due))
        with database.transaction() as session:
            try:
                campaigns.close_campaign(session, _origin("reviews-close"), campaign_id)
            except campaigns.CampaignClosed:
                continue  # closed by hand meanwhile
        closed.append(campaign_id)
    return {"closed": closed, "reminded": reminded}


def _audit_checkpoint(database: Database, settings: Settings, progress: Progress) -> dict[str, Any]:
    """Sign the audit chain's head and tell every target, so that systems the database's
    administrators cannot write to hold it (an event about no one user)."""
    if not settings.audit_signing_key:
        raise JobFailed("PROVISIONING_AUDIT_SIGNING_KEY is not set")
    key = checkpoints.private_key(settings.audit_signing_key)
    with database.transaction() as session:
        checkpoint = checkpoints.take(session)
        token = checkpoints.sign(checkpoint, key)
        data = {"checkpoint": {**checkpoint.claims(), "kid": key.thumbprint(), "jws": token}}
        messages = outbox.enqueue(session, [outbox.Event("audit.checkpoint", outbox.SERVICE, data)])
    return {"event_id": checkpoint.event_id, "hash": checkpoint.hash, "messages": len(messages)}


def _okta_inbox(database: Database, settings: Settings, progress: Progress) -> dict[str, Any]:
    done = inbox.process_pending(database, settings=settings)
    return {"deliveries": done.deliveries, "failed": done.failed, **done.outcomes}


def _okta_writeback(database: Database, settings: Settings, progress: Progress) -> dict[str, Any]:
    try:
        client = from_settings(settings)
    except OktaError as exc:
        raise JobFailed(str(exc)) from None
    try:
        return write_back_offboardings(database, client)
    finally:
        client.close()


def _okta(full: bool | None) -> Callable[[Database, Settings, Progress], dict[str, Any]]:
    def run(database: Database, settings: Settings, progress: Progress) -> dict[str, Any]:
        try:
            client = from_settings(settings)
        except OktaError as exc:
            raise JobFailed(str(exc)) from None
        try:
            if full is None:
                record = catch_up(database, client, settings=settings)
            else:
                record = reconcile(
                    database, client, full=full, progress=progress, settings=settings
                )
        finally:
            client.close()
        if record.status != "succeeded":
            raise JobFailed(f"okta run {record.id}: {record.error}")
        return {"okta_run": record.id, **record.counts}

    return run


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job(
            "offboardings",
            "schedule_offboardings",
            _offboardings,
            "carry out future-dated offboardings that fell due (late ones too)",
        ),
        Job(
            "okta-inbox", "schedule_okta_inbox", _okta_inbox, "apply pending event hook deliveries"
        ),
        Job(
            "okta-catch-up",
            "schedule_okta_catch_up",
            _okta(None),
            "System Log events the hooks missed",
            needs_okta=True,
        ),
        Job(
            "okta-reconcile-incremental",
            "schedule_okta_reconcile_incremental",
            _okta(False),
            "reconcile what changed in Okta since the last run",
            needs_okta=True,
        ),
        Job(
            "okta-reconcile",
            "schedule_okta_reconcile",
            _okta(True),
            "full reconciliation with Okta",
            needs_okta=True,
        ),
        Job(
            "okta-writeback",
            "schedule_okta_writeback",
            _okta_writeback,
            "remove offboarded people from the Okta groups that granted access",
            needs_okta=True,
            needs_writeback=True,
        ),
        Job(
            "expiry",
            "schedule_expiry",
            _expiry,
            "revoke what expired mappings, exceptions and requests gave; expire undecided requests",
        ),
        Job("stale-scan", "schedule_stale_scan", _stale_scan, "findings about stale access"),
        Job(
            "outbox-prune",
            "schedule_outbox_prune",
            _outbox_prune,
            "delete delivered outbox messages past their retention",
        ),
        Job(
            "reviews",
            "schedule_reviews",
            _reviews,
            "open the scheduled access review campaign when due; close those past deadline",
        ),
        Job(
            "reviews-close",
            "schedule_reviews_close",
            _close_reviews,
            "close access review campaigns past their deadline and apply their outcome",
        ),
        Job(
            "audit-checkpoint",
            "schedule_audit_checkpoint",
            _audit_checkpoint,
            "sign the audit chain's head and send it to the targets (with a signing key)",
            needs_signing_key=True,
        ),
    )
}
