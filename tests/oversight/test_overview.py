"""The overview's reads: counts, open findings by kind, outbox health per target, and
grants and revocations per day."""

from __future__ import annotations

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
