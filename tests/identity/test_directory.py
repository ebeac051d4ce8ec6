"""Users, groups and memberships: case-insensitive userNames, and facts that are order-safe."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity.models import Membership, User
from provisioning.people.lifecycle import (
    IdentityError,
    delete_group,
    delete_user,
    rename_group,
    set_active,
    update_user,
)
from tests.org import Org

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def live_grants(session) -> int:
    return session.scalar(select(func.count(Grant.id)).where(Grant.revoked_at.is_(None)))


def test_user_name_is_unique_without_regard_to_case(database, origin):
    with database.transaction() as session:
        Org(session, origin).user("Ada.Lovelace@example.com")
    with pytest.raises(IdentityError, match="already taken"), database.transaction() as session:
        Org(session, origin).user("ada.lovelace@EXAMPLE.com")


def test_a_taken_external_id_refuses_the_user_and_writes_nothing(database, origin):
    with database.transaction() as session:
        Org(session, origin).user("ada@example.com", external_id="00u1")
        events = session.scalar(select(func.count(AuditEvent.id)))
        with pytest.raises(IdentityError, match="externalId '00u1' is already taken"):
            Org(session, origin).user("grace@example.com", external_id="00u1")
        assert session.scalar(select(func.count(AuditEvent.id))) == events
        assert session.scalar(select(func.count(User.id))) == 1
        # The transaction is still usable: the clash wrote nothing and failed nothing.
        Org(session, origin).user("grace@example.com", external_id="00u2")
    with database.reader() as session:
        assert session.scalars(select(User.user_name).order_by(User.user_name)).all() == [
            "ada@example.com",
            "grace@example.com",
        ]


def test_a_deleted_users_name_and_external_id_may_be_taken_again(database, origin):
    with database.transaction() as session:
        ada = Org(session, origin).user("ada@example.com", external_id="00u1")
        delete_user(session, origin, ada)
        again = Org(session, origin).user("ADA@example.com", external_id="00u1")
        assert again.id != ada.id
        # The new user is an ordinary row of the session: changed and flushed like any.
        again.department = "Research"
        session.flush()
    with database.reader() as session:
        row = session.get(User, again.id)
        assert (row.user_name_key, row.department, row.version) == (
            "ada@example.com",
            "Research",
            2,
        )


def test_an_older_membership_fact_never_overrides_a_newer_one(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group, connector = org.user(), org.group(), org.connector()
        create_mapping(session, origin, group, connector, "read")
        org.join(ada, group, published_at=at(0))
        # Removed at minute 10; the add published at minute 5 arrives after it.
        org.leave(ada, group, published_at=at(10))
        assert org.join(ada, group, published_at=at(5)) is None
        assert live_grants(session) == 0
        membership = session.get(Membership, (ada.id, group.id))
        assert (membership.present, membership.published_at) == (False, at(10))
        # A newer add does apply.
        assert org.join(ada, group, published_at=at(11)).created
        assert live_grants(session) == 1


def test_a_repeated_fact_changes_nothing(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group, connector = org.user(), org.group(), org.connector()
        create_mapping(session, origin, group, connector, "read")
        org.join(ada, group, published_at=at(1))
        events = session.scalar(select(func.count(AuditEvent.id)))
        assert not org.join(ada, group, published_at=at(1))
        assert session.scalar(select(func.count(AuditEvent.id))) == events


def test_an_older_status_fact_never_reactivates(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group, connector = org.user(), org.group(), org.connector()
        create_mapping(session, origin, group, connector, "read")
        org.join(ada, group)
        set_active(session, origin, ada, False, published_at=at(10))
        assert set_active(session, origin, ada, True, published_at=at(9)) is None
        assert ada.active is False and live_grants(session) == 0
        set_active(session, origin, ada, True, published_at=at(12))
        assert ada.active is True and live_grants(session) == 1


def test_offboarded_user_gets_nothing_even_if_active(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        lee, group, connector = org.user(), org.group(), org.connector()
        create_mapping(session, origin, group, connector, "read")
        lee.offboarded_at = at(0)
        org.join(lee, group)
        assert live_grants(session) == 0


def test_profile_update_is_audited_and_keeps_user_names_unique(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, grace = org.user("ada@example.com"), org.user("grace@example.com")
        update_user(session, origin, ada, department="Research", user_name="Ada@Example.com")
        assert ada.user_name_key == "ada@example.com"
        with pytest.raises(IdentityError, match="already taken"):
            update_user(session, origin, ada, user_name="GRACE@example.com")
        assert ada.user_name == "Ada@Example.com"
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "user.updated"))
        assert event.before == {"department": None, "user_name": "ada@example.com"}
        assert grace.user_name_key == "grace@example.com"


def test_update_with_active_false_revokes(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group, connector = org.user(), org.group(), org.connector()
        create_mapping(session, origin, group, connector, "read")
        org.join(ada, group)
        diff = update_user(session, origin, ada, active=False)
        assert len(diff.revoked) == 1 and live_grants(session) == 0


def test_deleted_user_loses_everything_and_frees_the_user_name(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group, connector = org.user("ada@example.com"), org.group(), org.connector()
        create_mapping(session, origin, group, connector, "read")
        org.join(ada, group)
        diff = delete_user(session, origin, ada)
        assert [c.revoke_reason for c in diff.revoked] == ["user deleted"]
        assert org.user("ADA@example.com").id != ada.id


def test_deleting_a_group_revokes_what_only_it_justified(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, bob = org.user(), org.user()
        doomed, other = org.group(), org.group()
        github, wiki = org.connector(), org.connector()
        create_mapping(session, origin, doomed, github, "read")
        create_mapping(session, origin, doomed, wiki, "read")
        create_mapping(session, origin, other, wiki, "read")
        for user in (ada, bob):
            org.join(user, doomed)
        org.join(ada, other)
        rename_group(session, origin, doomed, "doomed")
        diff = delete_group(session, origin, doomed)
        revoked = sorted((c.user_id == ada.id, c.connector_id == github.id) for c in diff.revoked)
        # Ada keeps the wiki through `other`; Bob loses both; GitHub goes for both.
        assert len(diff.revoked) == 3 and (True, False) not in revoked
        actions = session.scalars(select(AuditEvent.action)).all()
        assert actions.count("mapping.deleted") == 2
        assert "group.deleted" in actions and "group.renamed" in actions
