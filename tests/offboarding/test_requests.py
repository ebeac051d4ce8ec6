"""Offboarding: everything revoked at once, kept revoked, on time when dated, once per key."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from provisioning.audit.log import Origin, Source
from provisioning.audit.models import AuditEvent
from provisioning.database import utcnow
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.offboarding import requests
from provisioning.offboarding.models import Offboarding
from provisioning.people.lifecycle import set_active
from tests.org import Org

HR = Origin(actor="workday", source=Source.HR)


def offboard(session, **fields):
    """An HR offboarding of Lee (employee E7) unless told otherwise."""
    fields.setdefault("identified_by", "employeeNumber")
    fields.setdefault("identifier", "E7")
    fields.setdefault("reason", "left")
    return requests.request(session, HR, **fields)


def live(session, user) -> int:
    return session.scalar(
        select(func.count(Grant.id)).where(Grant.user_id == user.id, Grant.revoked_at.is_(None))
    )


@pytest.fixture
def lee(database, origin):
    """Lee holds two connectors through one group."""
    with database.transaction() as session:
        org = Org(session, origin)
        lee = org.user("lee@example.com", employee_number="E7", external_id="00ulee")
        group = org.group()
        for slug in ("github", "slack"):
            create_mapping(session, origin, group, org.connector(slug), "read")
        org.join(lee, group)
    return lee, group


def test_immediate_offboarding_revokes_everything_in_the_same_transaction(database, lee):
    user, _ = lee
    with database.transaction() as session:
        outcome = offboard(
            session,
            reason="left",
            ticket="HR-9",
        )
        offboarding = outcome.offboarding
        assert offboarding.state == "done"
        assert sorted(r["connector"] for r in offboarding.revoked) == ["github", "slack"]
        assert live(session, user) == 0
    with database.reader() as session:
        actions = session.scalars(select(AuditEvent.action)).all()
        assert "user.offboarded" in actions and actions.count("grant.revoked") == 2


def test_an_offboarded_person_stays_without_access_until_reinstated(database, lee, origin):
    user, group = lee
    with database.transaction() as session:
        requests.request(
            session, HR, identified_by="userName", identifier="LEE@example.com", reason="left"
        )
    with database.transaction() as session:
        user = session.get(type(user), user.id)
        # Okta reactivates and re-adds: still nothing.
        set_active(session, origin, user, True)
        Org(session, origin).join(user, group)
        assert live(session, user) == 0
        with pytest.raises(requests.OffboardingError, match="reason"):
            requests.reinstate(session, origin, user, " ")
        diff = requests.reinstate(session, origin, user, "rehired, ticket HR-12")
        assert len(diff.created) == 2 and live(session, user) == 2


def test_future_dated_offboarding_runs_on_time_and_catches_up(database, lee):
    user, _ = lee
    later = utcnow() + dt.timedelta(hours=2)
    with database.transaction() as session:
        offboarding = requests.request(
            session,
            HR,
            identified_by="externalId",
            identifier="00ulee",
            reason="contract ends",
            effective_at=later,
        ).offboarding
        assert offboarding.state == "scheduled" and live(session, user) == 2
        assert requests.execute_due(session, HR) == {"executed": 0, "revoked": 0}
    # The job was down when it fell due: the next run catches up.
    with database.transaction() as session:
        session.execute(
            update(Offboarding).values(effective_at=utcnow() - dt.timedelta(minutes=30))
        )
        assert requests.execute_due(session, HR) == {"executed": 1, "revoked": 2}
        assert live(session, user) == 0


def test_a_scheduled_offboarding_can_be_cancelled(database, lee):
    with database.transaction() as session:
        offboarding = offboard(
            session,
            reason="notice",
            effective_at=utcnow() + dt.timedelta(days=1),
        ).offboarding
        requests.cancel(session, HR, offboarding, "changed their mind")
        assert offboarding.state == "cancelled"
        with pytest.raises(requests.OffboardingError, match="cancelled"):
            requests.cancel(session, HR, offboarding, "again")


def test_same_idempotency_key_same_answer_no_second_effect(database, lee):
    with database.transaction() as session:
        first = offboard(
            session,
            reason="left",
            idempotency_key="hr-req-1",
        )
    with database.transaction() as session:
        again = offboard(
            session,
            reason="left",
            idempotency_key="hr-req-1",
        )
        assert again.replayed and again.offboarding.id == first.offboarding.id
        assert session.scalar(select(func.count(Offboarding.id))) == 1


def test_a_past_effective_time_is_treated_as_now(database, lee):
    with database.transaction() as session:
        outcome = offboard(
            session,
            reason="left",
            effective_at=utcnow() - dt.timedelta(days=3),
        )
        assert outcome.effective_now and outcome.offboarding.state == "done"


def test_unknown_and_ambiguous_people_record_nothing(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        org.user("a@example.com", employee_number="E1")
        org.user("b@example.com", employee_number="E1")
    with database.transaction() as session:
        with pytest.raises(requests.UnknownPerson):
            requests.request(session, HR, identified_by="userName", identifier="x@y", reason="r")
        with pytest.raises(requests.AmbiguousPerson) as ambiguous:
            requests.request(
                session, HR, identified_by="employeeNumber", identifier="E1", reason="r"
            )
        assert sorted(c["userName"] for c in ambiguous.value.candidates) == [
            "a@example.com",
            "b@example.com",
        ]
        assert session.scalar(select(func.count(Offboarding.id))) == 0


def test_an_okta_deactivation_leaves_a_record_but_reactivation_restores(database, lee):
    user, _ = lee
    okta = Origin(actor="okta:admin@example.com", source=Source.OKTA_HOOK, reason="okta event x")
    with database.transaction() as session:
        user = session.get(type(user), user.id)
        set_active(session, okta, user, False)
        record = session.scalar(select(Offboarding))
        assert (record.source, record.state, record.identified_by) == ("okta", "done", "externalId")
        assert sorted(r["connector"] for r in record.revoked) == ["github", "slack"]
        set_active(session, okta, user, True)
        assert live(session, user) == 2  # not sticky, unlike an HR offboarding
    with database.transaction() as session:
        user = session.get(type(user), user.id)
        set_active(session, Origin("admin", Source.ADMIN), user, False)
        assert (
            session.scalar(select(func.count(Offboarding.id))) == 1
        )  # admins offboard via HR path
