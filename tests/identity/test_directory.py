"""Users, groups and memberships: case-insensitive userNames, and facts that are order-safe."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity.directory import IdentityError, set_active
from provisioning.identity.models import Membership
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
