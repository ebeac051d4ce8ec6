"""Okta events applied to identity: every handled type, duplicates, order, nulls, outcomes."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from provisioning.audit.log import Source
from provisioning.audit.models import AuditEvent
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity.models import Group, Membership, PendingFact, User
from provisioning.okta import events
from provisioning.okta.models import EventOutcome, SeenEvent
from tests.okta import payloads as p
from tests.org import Org


def apply(database, *raw: dict, source: Source = Source.OKTA_HOOK):
    with database.transaction() as session:
        return [events.apply(session, events.OktaEvent.model_validate(e), source) for e in raw]


@pytest.fixture
def mapped(database, origin):
    """The Okta group eng-platform (already pushed) mapped to the github connector."""
    with database.transaction() as session:
        org = Org(session, origin)
        github = org.connector("github")
        from provisioning.people.lifecycle import create_group

        eng = create_group(session, origin, display_name="eng-platform", external_id="00g1eng")
        create_mapping(session, origin, eng, github, "read_write")
    return github


def live(database) -> list[tuple[str, str]]:
    with database.reader() as session:
        rows = session.execute(
            select(User.external_id, Grant.access_level)
            .join(Grant, Grant.user_id == User.id)
            .where(Grant.revoked_at.is_(None))
        )
        return sorted((u, str(level)) for u, level in rows)


def test_membership_add_creates_the_user_and_grants(database, mapped):
    assert apply(database, p.joined()) == [EventOutcome.APPLIED]
    assert live(database) == [("00u1ada", "read_write")]
    with database.reader() as session:
        ada = session.scalar(select(User).where(User.external_id == "00u1ada"))
        assert (ada.user_name, ada.display_name, ada.email) == (
            "ada@example.com",
            "Ada Lovelace",
            "ada@example.com",
        )
        membership = session.scalar(select(Membership))
        assert membership.source == "okta-hook"
        created = session.scalar(select(AuditEvent).where(AuditEvent.action == "grant.created"))
        assert (created.source, created.actor) == ("okta-hook", "okta:admin@example.com")
        assert "group.user_membership.add" in created.reason


def test_membership_remove_revokes(database, mapped):
    apply(database, p.joined(0), p.left(1))
    assert live(database) == []


def test_repeated_event_changes_nothing(database, mapped):
    add = p.joined()
    apply(database, add)
    with database.reader() as session:
        events_before = session.scalar(select(func.count(AuditEvent.id)))
    assert apply(database, add) == [None]
    with database.reader() as session:
        assert session.scalar(select(func.count(AuditEvent.id))) == events_before


def test_remove_published_before_an_add_but_delivered_after_is_stale(database, mapped):
    assert apply(database, p.joined(10)) == [EventOutcome.APPLIED]
    assert apply(database, p.left(5)) == [EventOutcome.STALE]
    assert live(database) == [("00u1ada", "read_write")]
    # And the other way round: an add published before a remove loses.
    apply(database, p.left(20))
    assert apply(database, p.joined(15)) == [EventOutcome.STALE]
    assert live(database) == []


@pytest.mark.parametrize(
    "event_type",
    ["user.lifecycle.deactivate", "user.lifecycle.suspend", "user.lifecycle.delete.initiated"],
)
def test_deactivating_events_revoke_everything(database, mapped, event_type):
    apply(database, p.joined(0))
    assert apply(database, p.event(event_type, [p.user()], minute=1)) == [EventOutcome.APPLIED]
    assert live(database) == []
    with database.reader() as session:
        grant = session.scalar(select(Grant))
        assert grant.revoke_reason == "user deactivated"


@pytest.mark.parametrize(
    "event_type",
    ["user.lifecycle.activate", "user.lifecycle.unsuspend", "user.lifecycle.reactivate"],
)
def test_activating_events_re_derive_grants(database, mapped, event_type):
    apply(database, p.joined(0), p.event("user.lifecycle.suspend", [p.user()], minute=1))
    assert live(database) == []
    apply(database, p.event(event_type, [p.user()], minute=2))
    assert live(database) == [("00u1ada", "read_write")]


def test_an_older_reactivation_does_not_undo_a_deactivation(database, mapped):
    apply(database, p.joined(0), p.event("user.lifecycle.deactivate", [p.user()], minute=10))
    late = p.event("user.lifecycle.reactivate", [p.user()], minute=5)
    assert apply(database, late) == [EventOutcome.STALE]
    assert live(database) == []


def test_create_and_profile_update_upsert_the_user(database):
    created = p.event(
        "user.lifecycle.create",
        [p.user("00u9", "grace@example.com", "Grace Hopper")],
        minute=0,
        debug={"employeeNumber": "E42", "department": "Navy"},
    )
    renamed = p.event(
        "user.account.update_profile",
        [p.user("00u9", "grace.hopper@example.com", "Grace B. Hopper")],
        minute=5,
        debug={"department": "Research"},
    )
    older = p.event(
        "user.account.update_profile",
        [p.user("00u9", "old@example.com", "Old Name")],
        minute=3,
    )
    assert apply(database, created, renamed, older) == [
        EventOutcome.APPLIED,
        EventOutcome.APPLIED,
        EventOutcome.STALE,
    ]
    with database.reader() as session:
        grace = session.scalar(select(User).where(User.external_id == "00u9"))
        assert grace.user_name == "grace.hopper@example.com"
        assert grace.display_name == "Grace B. Hopper"
        assert (grace.employee_number, grace.department) == ("E42", "Research")


def test_a_user_known_by_login_is_linked_to_its_okta_id(database, origin, mapped):
    with database.transaction() as session:
        Org(session, origin).user("ada@example.com")
    apply(database, p.joined())
    with database.reader() as session:
        assert session.scalar(select(func.count(User.id))) == 1
        assert session.scalar(select(User.external_id)) == "00u1ada"


def test_group_lifecycle(database, origin):
    apply(
        database,
        p.event("group.lifecycle.create", [p.group("00g7", "sales")], minute=0),
        p.event("group.profile.update", [p.group("00g7", "sales-emea")], minute=1),
    )
    with database.reader() as session:
        assert session.scalar(select(Group.display_name)) == "sales-emea"


def test_group_deletion_revokes_and_a_late_add_does_not_revive_it(database, mapped):
    apply(database, p.joined(0))
    deleted = p.event("group.lifecycle.delete", [p.group()], minute=5)
    assert apply(database, deleted) == [EventOutcome.APPLIED]
    assert live(database) == []
    with database.reader() as session:
        assert session.scalar(select(func.count(Group.id))) == 0
    # An add published before the deletion, delivered after it.
    assert apply(database, p.joined(3)) == [EventOutcome.STALE]
    late_update = p.event("group.profile.update", [p.group()], minute=4)
    assert apply(database, late_update) == [EventOutcome.STALE]
    with database.reader() as session:
        assert session.scalar(select(func.count(Group.id))) == 0


@pytest.mark.parametrize("result", ["FAILURE", "DENY", "SKIPPED"])
def test_unsuccessful_events_change_nothing(database, mapped, result):
    assert apply(database, p.joined(result=result)) == [EventOutcome.IGNORED]
    assert live(database) == []


def test_outcome_case_varies(database, mapped):
    assert apply(database, p.joined(result="success")) == [EventOutcome.APPLIED]


def test_unknown_types_are_recorded_and_ignored(database, mapped):
    odd = p.event("user.session.start", [p.user()])
    assert apply(database, odd) == [EventOutcome.IGNORED]
    with database.reader() as session:
        assert session.get(SeenEvent, odd["uuid"]).outcome == EventOutcome.IGNORED
        assert session.scalar(select(func.count(User.id))) == 0


def test_null_actor_and_debug_context_are_tolerated(database, mapped):
    raw = p.joined()
    raw["actor"] = None
    raw["debugContext"] = None
    raw["client"] = None
    raw["outcome"] = None
    assert apply(database, raw) == [EventOutcome.APPLIED]
    with database.reader() as session:
        created = session.scalar(select(AuditEvent).where(AuditEvent.action == "grant.created"))
        assert created.actor == "okta:system"


def test_removing_an_unknown_user_is_kept_until_they_appear(database):
    assert apply(database, p.left()) == [EventOutcome.PENDING]
    with database.reader() as session:
        assert session.scalar(select(func.count(User.id))) == 0
        (kept,) = session.scalars(select(PendingFact))
        assert (kept.kind, kept.user_external_id, kept.group_external_id) == (
            "removal",
            "00u1ada",
            "00g1eng",
        )


def test_same_uuid_from_the_system_log_is_applied_once(database, mapped):
    add = p.joined()
    apply(database, add, source=Source.OKTA_HOOK)
    assert apply(database, add, source=Source.OKTA_SYNC) == [None]


def test_membership_changes_from_hooks_give_the_group_a_new_version(database, mapped):
    """The members are part of the SCIM Group: its ETag and lastModified move with them."""

    def group() -> tuple[int, object]:
        with database.reader() as session:
            row = session.scalar(select(Group).where(Group.external_id == "00g1eng"))
            return row.version, row.updated_at

    before = group()
    apply(database, p.joined(0))
    joined = group()
    assert joined[0] > before[0] and joined[1] > before[1]
    apply(database, p.joined(0))  # a repeat changes nothing, so no new version
    assert group() == joined
    apply(database, p.left(1))
    assert group()[0] > joined[0]


@pytest.mark.parametrize("deny_first", [True, False])
def test_at_the_same_time_a_denial_wins_whichever_arrives_first(database, mapped, deny_first):
    apply(database, p.event("user.lifecycle.create", [p.user()], minute=0))
    off = p.event("user.lifecycle.deactivate", [p.user()], minute=5)
    on = p.event("user.lifecycle.activate", [p.user()], minute=5)
    add, remove = p.joined(5), p.left(5)
    for one in [off, on, remove, add] if deny_first else [on, off, add, remove]:
        apply(database, one)
    with database.reader() as session:
        user = session.scalar(select(User))
        assert user.active is False
        assert session.scalar(select(Membership.present)) is False


def test_a_time_ahead_of_its_receipt_is_ordered_at_the_receipt(database, mapped):
    """With the skew allowed, ahead is believed; beyond it, the receipt is the time."""
    received = p.T0 + dt.timedelta(minutes=10)
    near = p.joined(14)  # 4 minutes ahead: within the 300 s allowed
    far = p.left(16)
    with database.transaction() as session:
        for raw in (near, far):
            events.apply(
                session,
                events.OktaEvent.model_validate(raw),
                Source.OKTA_HOOK,
                received_at=received,
            )
    with database.reader() as session:
        assert session.get(SeenEvent, near["uuid"]).ordered_at == p.T0 + dt.timedelta(minutes=14)
        ordered = session.get(SeenEvent, far["uuid"])
        # Ordered at its receipt, so the membership added at minute 14 stays.
        assert ordered.ordered_at == received and ordered.clamped
        assert ordered.outcome == EventOutcome.STALE
    assert live(database) == [("00u1ada", "read_write")]


def test_the_allowed_skew_is_a_setting(database, mapped):
    from provisioning.settings import SettingsError, load

    with pytest.raises(SettingsError, match="PROVISIONING_OKTA_EVENT_SKEW_SECONDS"):
        load(okta_event_skew_seconds=-1)
    received = p.T0
    with database.transaction() as session:
        raw = p.joined(30)
        events.apply(
            session,
            events.OktaEvent.model_validate(raw),
            Source.OKTA_HOOK,
            received_at=received,
            settings=load(okta_event_skew_seconds=3600),
        )
        assert session.get(SeenEvent, raw["uuid"]).clamped is False


def test_a_removal_kept_for_someone_unknown_applies_when_reconciliation_creates_them(
    database, origin, okta, client
):
    """Reconciliation creates the person through the identity functions: the kept removal
    from another group applies then, so the older add delivered later loses."""
    from provisioning.okta.reconcile import reconcile
    from tests.org import mapped_okta_group

    eng = okta.state.add_group("eng")
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"])
    mapped_okta_group(database, origin, eng["id"])
    sales = mapped_okta_group(database, origin, "00gsales", slug="crm")
    target = [p.user(ada["id"], "ada@example.com"), p.group("00gsales", "sales")]
    removed = p.event("group.user_membership.remove", target, minute=10)
    assert apply(database, removed) == [EventOutcome.PENDING]
    assert reconcile(database, client).status == "succeeded"
    added = p.event("group.user_membership.add", target, minute=5)
    assert apply(database, added) == [EventOutcome.STALE]
    with database.reader() as session:
        assert session.scalar(select(func.count(PendingFact.id))) == 0
        membership = session.scalar(select(Membership).where(Membership.group_id == sales.id))
        assert membership.present is False
