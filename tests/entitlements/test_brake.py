"""The mass-revocation brake: too much revoked at once waits for an admin's confirmation."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from provisioning.audit.log import Origin, Source
from provisioning.audit.models import AuditEvent
from provisioning.database import utcnow
from provisioning.entitlements import brake, holds
from provisioning.entitlements.mappings import create_mapping, delete_mapping, update_mapping
from provisioning.entitlements.models import Grant, Mapping, RevocationHold
from provisioning.identity.models import Group
from provisioning.offboarding import requests
from provisioning.people.lifecycle import delete_group
from provisioning.settings import load
from tests.org import Org


@pytest.fixture
def limits():
    """10% of live grants, and more than 5 revocations, for organisations of test size."""
    return load(mass_revocation_share=0.10, mass_revocation_minimum=5)


def changed(settings, **values):
    return settings.model_copy(update={f"mass_revocation_{k}": v for k, v in values.items()})


@pytest.fixture
def org(database, origin):
    """40 live grants: 30 through engineering (github), 10 through sales (slack)."""
    with database.transaction() as session:
        org = Org(session, origin)
        groups = {}
        for name, slug, size in (("engineering", "github", 30), ("sales", "slack", 10)):
            group = groups[name] = org.group(name)
            create_mapping(session, origin, group, org.connector(slug), "read")
            for n in range(size):
                org.join(org.user(f"{name}{n}@example.com", employee_number=f"{name}{n}"), group)
    return groups


def live(database) -> int:
    with database.reader() as session:
        return session.scalar(select(func.count(Grant.id)).where(Grant.revoked_at.is_(None)))


def mapping_of(session, group) -> Mapping:
    return session.scalar(select(Mapping).where(Mapping.group_id == group.id))


def test_a_mapping_deletion_revoking_too_much_is_held_then_confirmed(database, origin, org, limits):
    with database.transaction() as session:
        mapping = mapping_of(session, org["engineering"])
        diff = delete_mapping(session, origin, mapping, settings=limits)
    assert diff.revoked == [] and len(diff.held) == 30 and diff.hold_id
    assert live(database) == 40  # the facts changed; the grants wait
    with database.reader() as session:
        hold = session.get(RevocationHold, diff.hold_id)
        assert (hold.state, hold.revocations, hold.active_grants, len(hold.user_ids)) == (
            "held",
            30,
            40,
            30,
        )
        assert hold.cause.startswith("mapping") and hold.actor == "test-admin"
        actions = set(session.scalars(select(AuditEvent.action)))
    assert "revocations.held" in actions and "grant.revoked" not in actions

    admin = Origin("security-lead", Source.ADMIN)
    with database.transaction() as session:
        hold = session.get(RevocationHold, diff.hold_id)
        confirmed = holds.confirm(session, admin, hold, "engineering moved to a new tool")
    assert len(confirmed.revoked) == 30 and live(database) == 10
    with database.reader() as session:
        hold = session.get(RevocationHold, diff.hold_id)
        assert (hold.state, hold.revoked, hold.decided_by) == ("confirmed", 30, "security-lead")
    with database.transaction() as session, pytest.raises(ValueError):
        holds.confirm(session, admin, session.get(RevocationHold, diff.hold_id), "again")


def test_a_change_under_the_limit_goes_ahead(database, origin, org, limits):
    limits = changed(limits, share=0.30)  # 10 of 40 is 25%
    with database.transaction() as session:
        diff = delete_mapping(session, origin, mapping_of(session, org["sales"]), settings=limits)
    assert len(diff.revoked) == 10 and not diff.held and live(database) == 30


def test_the_minimum_spares_small_changes_whatever_the_share(database, origin, org, limits):
    limits = changed(limits, minimum=10)
    with database.transaction() as session:
        diff = delete_mapping(session, origin, mapping_of(session, org["sales"]), settings=limits)
    assert len(diff.revoked) == 10 and live(database) == 30


def test_a_mapping_change_that_expires_it_is_braked_too(database, origin, org, limits):
    with database.transaction() as session:
        mapping = mapping_of(session, org["engineering"])
        expired = utcnow() - dt.timedelta(days=1)
        diff = update_mapping(session, origin, mapping, settings=limits, expires_at=expired)
    assert len(diff.held) == 30 and live(database) == 40


def test_a_group_deletion_is_braked(database, origin, org, limits):
    with database.transaction() as session:
        group = session.get(Group, org["engineering"].id)
        diff = delete_group(session, origin, group, settings=limits)
    assert len(diff.held) == 30 and live(database) == 40
    with database.reader() as session:
        assert session.get(Group, org["engineering"].id) is None
        hold = session.get(RevocationHold, diff.hold_id)
    assert "engineering" in hold.cause


def test_hr_offboardings_are_never_held(database, org):
    # Offboardings take no brake settings: nothing engages a brake for them.
    hr = Origin("workday", Source.HR)
    with database.transaction() as session:
        for n in range(30):
            requests.request(
                session,
                hr,
                identified_by="employeeNumber",
                identifier=f"engineering{n}",
                reason="x",
            )
    assert live(database) == 10
    with database.reader() as session:
        assert session.scalar(select(func.count(RevocationHold.id))) == 0


def test_one_brake_spans_a_run_and_holds_the_rest_once_it_has_held(database, origin, org, limits):
    run = brake.new("a run", limits)
    with database.transaction() as session, brake.applied(session, run):
        sales = org["sales"]
        first = delete_mapping(session, origin, mapping_of(session, sales))
    assert len(first.held) == 10  # 10 > max(5, 4)
    with database.transaction() as session, brake.applied(session, run):
        second = delete_mapping(session, origin, mapping_of(session, org["engineering"]))
    assert len(second.held) == 30 and second.hold_id == first.hold_id
    with database.reader() as session:
        held = session.scalars(select(RevocationHold)).all()
    assert [(h.revocations, len(h.user_ids)) for h in held] == [(40, 40)]
    assert live(database) == 40
