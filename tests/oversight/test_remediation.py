"""Dormant-access remediation and reminders: told to a real webhook target, then carried out."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from jobs.registry import JOBS
from provisioning.database import utcnow
from provisioning.delivery import targets
from provisioning.delivery.models import OutboxMessage, TargetKind
from provisioning.delivery.worker import Deliverer
from provisioning.entitlements.mappings import create_exception, create_mapping
from provisioning.entitlements.models import Grant, ReviewRevocation
from provisioning.identity.models import Group, User
from provisioning.oversight.models import Finding, FindingKind
from provisioning.reviews.campaigns import create_campaign
from provisioning.reviews.models import CampaignTrigger, NoResponse
from provisioning.settings import load
from tests.delivery.conftest import LOCAL, RECEIVERS
from tests.org import Org, later


@pytest.fixture
def settings(database):
    return load(
        database_url=database.engine.url.render_as_string(hide_password=False),
        delivery_allowed_networks=RECEIVERS,
    )


@pytest.fixture
def deliverer(database, settings, receiver, origin):
    with database.transaction() as session:
        targets.create(
            session,
            origin,
            name="siem",
            kind=TargetKind.WEBHOOK,
            url=targets.check_url(receiver.url, LOCAL),
            secret=receiver.secret,
            connectors=None,
            max_attempts=5,
        )
    worker = Deliverer(database, settings)
    yield worker
    worker.stop()


def run(name, database, settings):
    return JOBS[name].run(database, settings, lambda *_: None)


@pytest.fixture
def idle(database, origin):
    """Lee holds github (30-day dormancy, 7-day grace) and wiki (no remediation), both
    granted 40 days ago and never used."""
    with database.transaction() as session:
        org = Org(session, origin)
        lee = org.user("lee@example.com")
        group = org.group()
        github = org.connector("github", dormant_after_days=30, dormant_grace_days=7)
        wiki = org.connector("wiki", dormant_after_days=30)
        for connector in (github, wiki):
            create_mapping(session, origin, group, connector, "read")
        org.join(lee, group)
        session.execute(update(Grant).values(granted_at=utcnow() - dt.timedelta(days=40)))
    return lee, group, github


def age_findings(database, *, days: float) -> None:
    """As if the findings had opened ``days`` earlier."""
    with database.transaction() as session:
        for finding in session.scalars(select(Finding)):
            finding.first_seen -= dt.timedelta(days=days)


def live(database) -> set[str]:
    from provisioning.connectors.models import Connector

    with database.reader() as session:
        return set(
            session.scalars(
                select(Connector.slug)
                .join(Grant, Grant.connector_id == Connector.id)
                .where(Grant.revoked_at.is_(None))
            )
        )


def test_a_dormant_grant_is_announced_then_revoked_when_the_grace_ends(
    database, settings, idle, deliverer, receiver, origin
):
    lee, group, _ = idle
    counts = run("stale-scan", database, settings)
    assert counts["remediation"] == {"announced": 1, "revoked": 0}
    deliverer.drain()
    [dormant] = receiver.of_type("grant.dormant")
    assert dormant["data"]["grant"]["connector"] == "github"
    revoke_at = dt.datetime.fromisoformat(dormant["data"]["revoke_at"])
    assert dt.timedelta(days=6.9) < revoke_at - utcnow() <= dt.timedelta(days=7)

    assert run("stale-scan", database, settings)["remediation"] == {"announced": 0, "revoked": 0}
    assert live(database) == {"github", "wiki"}

    age_findings(database, days=8)  # more than the week of grace passes
    assert run("stale-scan", database, settings)["remediation"] == {"announced": 0, "revoked": 1}
    assert live(database) == {"wiki"}  # no grace configured: flagged, never revoked
    with database.reader() as session:
        finding = session.scalar(
            select(Finding).where(
                Finding.kind == FindingKind.DORMANT_GRANT,
                Finding.evidence["connector"].as_string() == "github",
            )
        )
        withdrawal = session.scalar(select(ReviewRevocation))
    assert finding.state == "resolved" and "grace" in finding.decision_reason
    assert withdrawal.item_id is None and withdrawal.revoked_by == "job:stale-scan"
    deliverer.drain()
    assert [e["data"]["grant"]["connector"] for e in receiver.of_type("grant.revoked")] == [
        "github"
    ]

    with database.transaction() as session:  # a membership event does not bring it back
        org = Org(session, origin)
        lee_now, group_now = session.get(User, lee.id), session.get(Group, group.id)
        org.leave(lee_now, group_now)
        org.join(lee_now, group_now)
    assert "github" not in live(database)


def test_a_grant_used_again_within_the_grace_is_kept(database, settings, idle, deliverer):
    run("stale-scan", database, settings)
    with database.transaction() as session:
        session.execute(update(Grant).values(last_used_at=utcnow()))
    age_findings(database, days=8)
    counts = run("stale-scan", database, settings)
    assert counts["remediation"]["revoked"] == 0 and live(database) == {"github", "wiki"}


def test_expiring_exceptions_and_mappings_are_announced_once(
    database, settings, origin, deliverer, receiver
):
    with database.transaction() as session:
        org = Org(session, origin)
        lee, ada = org.user("lee@example.com"), org.user("ada@example.com")
        group = org.group("contractors")
        soon, late = org.connector("github"), org.connector("wiki")
        create_exception(
            session, origin, lee, soon, "read", justification="audit", expires_at=later(3)
        )
        create_exception(
            session, origin, lee, late, "read", justification="long", expires_at=later(30)
        )
        create_mapping(session, origin, group, late, "read", expires_at=later(2))
        org.join(ada, group)
    first = run("expiry", database, settings)
    second = run("expiry", database, settings)
    assert first["reminded"] == {"exceptions": 1, "mappings": 1, "requests": 0}
    assert second["reminded"] == {"exceptions": 0, "mappings": 0, "requests": 0}
    deliverer.drain()
    [exception] = receiver.of_type("exception.expiring")
    assert exception["data"]["exception"]["connector"] == "github"
    assert exception["data"]["user"]["userName"] == "lee@example.com"
    [mapping] = receiver.of_type("mapping.expiring")
    assert mapping["data"]["mapping"]["group"] == "contractors"
    assert mapping["data"]["mapping"]["members"] == 1 and "user" not in mapping["data"]


def test_a_review_deadline_is_announced_once(database, settings, origin, deliverer, receiver):
    with database.transaction() as session:
        org = Org(session, origin)
        group = org.group()
        create_mapping(session, origin, group, org.connector("github"), "read")
        org.join(org.user("lee@example.com"), group)
        create_campaign(
            session,
            origin,
            name="Q4",
            trigger=CampaignTrigger.MANUAL,
            deadline=later(2),
            no_response=NoResponse.KEEP,
        )
    assert len(run("reviews-close", database, settings)["reminded"]) == 1
    assert run("reviews-close", database, settings)["reminded"] == []
    deliverer.drain()
    [reminder] = receiver.of_type("review.deadline")
    assert reminder["data"]["campaign"]["name"] == "Q4"
    assert reminder["data"]["campaign"]["undecided"] == 1
    with database.reader() as session:
        assert session.scalar(select(func.count(OutboxMessage.id))) == 2  # grant + reminder
