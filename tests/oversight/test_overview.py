"""The overview's reads: counts, open findings by kind, outbox health per target, and
grants and revocations per day."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update

from provisioning.database import utcnow
from provisioning.delivery.models import MessageState, OutboxMessage
from provisioning.delivery.outbox import health
from provisioning.entitlements.mappings import create_mapping
from provisioning.oversight.findings import observe
from provisioning.oversight.models import FindingKind, Severity
from provisioning.oversight.overview import activity, open_findings, totals
from provisioning.people.lifecycle import set_active
from tests.delivery.conftest import add_target
from tests.org import Org


def test_the_overview_counts_what_the_database_holds(database, origin, receiver):
    add_target(database, "webhook", receiver.url, receiver.secret, name="gateway")
    add_target(database, "webhook", receiver.url, receiver.secret, name="idle")
    with database.transaction() as session:
        org = Org(session, origin)
        people = [org.user() for _ in range(3)]
        group = org.group()
        for person in people:
            org.join(person, group)
        github = org.connector("github")
        org.connector("off", enabled=False)
        create_mapping(session, origin, group, github, "read")
        set_active(session, origin, people[0], False)
    with database.transaction() as session:
        # One message dead-lettered; the rest wait.
        first = session.query(OutboxMessage).order_by(OutboxMessage.id).first()
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == first.id)
            .values(state=MessageState.DEAD)
        )
        observe(session, FindingKind.DORMANT_GRANT, Severity.LOW, "grant", [("1", {}), ("2", {})])
    with database.reader() as session:
        seen = totals(session)
        findings = open_findings(session)
        targets = health(session)
        days = activity(session, 7)
    assert (seen.live_grants, seen.people, seen.active_people) == (2, 3, 2)
    assert (seen.connectors, seen.enabled_connectors) == (2, 1)
    assert [d.day for d in days][-1] == utcnow().date()
    assert len(days) == 7
    assert (days[-1].granted, days[-1].revoked) == (3, 1)
    assert sum(d.granted + d.revoked for d in days[:-1]) == 0
    by_name = {t.name: t for t in targets}
    assert set(by_name) == {"gateway", "idle"}
    gateway = by_name["gateway"]
    assert gateway.dead == 1
    assert gateway.pending >= 1
    assert gateway.oldest_pending_at is not None
    assert findings == {"dormant_grant": 2}


def test_event_to_revoke_times_each_okta_revocation_from_its_published_time(database, origin):
    from provisioning.audit.log import Source
    from provisioning.okta.events import take
    from provisioning.oversight.overview import speed
    from tests.okta import payloads

    with database.transaction() as session:
        org = Org(session, origin)
        ada = org.user("ada@example.com", external_id="00u1ada")
        bob = org.user("bob@example.com", external_id="00u1bob")
        group = org.group()
        for person in (ada, bob):
            org.join(person, group)
        create_mapping(session, origin, group, org.connector("github"), "read")
        create_mapping(session, origin, group, org.connector("wiki"), "read")
        set_active(session, origin, bob, False)  # revoked by an admin: not an Okta event
    before = utcnow()
    with database.transaction() as session:
        deactivated = payloads.event("user.lifecycle.deactivate", [payloads.user("00u1ada")])
        take(session, deactivated, Source.OKTA_HOOK, received_at=utcnow())
    after = utcnow()
    with database.reader() as session:
        figures = speed(session)
    assert figures.event_to_revoke.count == 2  # ada's two grants, not bob's
    lowest = (before - payloads.T0).total_seconds()
    highest = (after - payloads.T0).total_seconds()
    assert lowest <= figures.event_to_revoke.p50 <= figures.event_to_revoke.p99 <= highest
    assert figures.delivery.count == 0


def test_delivery_latency_is_creation_to_acknowledgement(database, origin, receiver):
    import datetime as dt

    from provisioning.oversight.overview import speed

    add_target(database, "webhook", receiver.url, receiver.secret, name="gateway")
    with database.transaction() as session:
        org = Org(session, origin)
        group = org.group()
        for _ in range(5):
            org.join(org.user(), group)
        create_mapping(session, origin, group, org.connector("github"), "read")
    now = utcnow()
    with database.transaction() as session:
        messages = session.query(OutboxMessage).order_by(OutboxMessage.id).all()
        assert len(messages) == 5
        for n, message in enumerate(messages[:4]):  # acknowledged 1, 2, 3 and 60 s after
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message.id)
                .values(
                    state=MessageState.DELIVERED,
                    created_at=now - dt.timedelta(seconds=100),
                    delivered_at=now - dt.timedelta(seconds=100 - (1, 2, 3, 60)[n]),
                )
            )
        session.execute(  # acknowledged two days ago: outside the window
            update(OutboxMessage)
            .where(OutboxMessage.id == messages[4].id)
            .values(state=MessageState.DELIVERED, delivered_at=now - dt.timedelta(days=2))
        )
    with database.reader() as session:
        figures = speed(session).delivery
    assert (figures.count, figures.p50, figures.p99) == (4, 2.0, 60.0)


@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=300))
def test_latency_percentiles_are_nearest_rank_samples(samples):
    from provisioning.oversight.overview import _latency

    figures = _latency(list(samples))
    assert figures.count == len(samples)
    if not samples:
        assert (figures.p50, figures.p99) == (None, None)
        return
    ordered = sorted(samples)
    assert figures.p50 in ordered and figures.p99 in ordered
    assert figures.p50 <= figures.p99 <= ordered[-1]
    # At least half the samples are at or under the median, at least 99% under the p99.
    assert sum(s <= figures.p50 for s in ordered) * 2 >= len(ordered)
    assert sum(s <= figures.p99 for s in ordered) * 100 >= 99 * len(ordered)
