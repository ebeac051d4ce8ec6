"""The entitlement engine: joiners, movers, leavers, guards, expiry, and idempotence."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.connectors.catalogue import update_connector
from provisioning.database import utcnow
from provisioning.entitlements import engine
from provisioning.entitlements.mappings import (
    MappingError,
    create_exception,
    create_mapping,
    delete_mapping,
)
from provisioning.entitlements.models import Grant, Mapping
from provisioning.people.lifecycle import set_active
from tests.org import Org, later


def live_grants(session) -> dict[tuple, str]:
    rows = session.execute(
        select(Grant.user_id, Grant.connector_id, Grant.access_level).where(
            Grant.revoked_at.is_(None)
        )
    )
    return {(u, c): str(level) for u, c, level in rows}


def audit_actions(session) -> list[str]:
    return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_joiner_gets_what_the_group_maps_to(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group, github = org.user(), org.group("eng-platform"), org.connector("github")
        org.join(ada, group)
        mapping, diff = create_mapping(session, origin, group, github, "read_write")
        assert [(c.user_id, c.access_level) for c in diff.created] == [(ada.id, "read_write")]
        assert diff.created[0].reasons == (f"mapping:{mapping.id}",)
    with database.reader() as session:
        assert live_grants(session) == {(ada.id, github.id): "read_write"}
        assert engine.explain(session, ada.id, github.id) == [f"mapping:{mapping.id}"]
        created = session.scalars(select(AuditEvent).where(AuditEvent.action == "grant.created"))
        (event,) = created.all()
        assert event.after["connector"] == "github"
        assert event.after["reasons"] == [f"mapping:{mapping.id}"]
        assert event.user_id == ada.id


def test_mover_loses_only_what_no_remaining_group_justifies(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada = org.user()
        platform, data, everyone = org.group(), org.group(), org.group()
        github, wiki = org.connector("github"), org.connector("wiki", capability="read")
        create_mapping(session, origin, platform, github, "read_write")
        create_mapping(session, origin, data, github, "read")
        create_mapping(session, origin, everyone, wiki, "read")
        for group in (platform, data, everyone):
            org.join(ada, group)
        diff = org.leave(ada, platform)
        # Still in `data`: GitHub stays, at read level now.
        assert diff.revoked == []
        assert [(c.previous_level, c.access_level) for c in diff.updated] == [
            ("read_write", "read")
        ]
        diff = org.leave(ada, data)
        assert [(c.connector_id, c.revoke_reason) for c in diff.revoked] == [
            (github.id, "no mapping or exception justifies it")
        ]
    with database.reader() as session:
        assert live_grants(session) == {(ada.id, wiki.id): "read"}


def test_leaver_loses_everything_in_the_same_transaction(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        lee, group = org.user(), org.group()
        connectors = [org.connector() for _ in range(3)]
        for connector in connectors:
            create_mapping(session, origin, group, connector, "read")
        org.join(lee, group)
        assert len(live_grants(session)) == 3
        diff = set_active(session, origin, lee, False)
        assert {c.revoke_reason for c in diff.revoked} == {"user deactivated"}
        assert len(diff.revoked) == 3
    with database.reader() as session:
        assert live_grants(session) == {}
        revoked = session.scalars(select(Grant).where(Grant.revoked_at.is_not(None))).all()
        assert {g.revoke_reason for g in revoked} == {"user deactivated"}
        assert audit_actions(session).count("grant.revoked") == 3


def test_running_twice_changes_nothing_the_second_time(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        group = org.group()
        connector = org.connector()
        for _ in range(5):
            org.join(org.user(), group)
        create_mapping(session, origin, group, connector, "read")
    with database.transaction() as session:
        before = session.scalar(select(func.count(AuditEvent.id)))
        assert not engine.apply(session, engine.Affected.everyone(), origin)
        assert not engine.apply(session, engine.Affected.group(group.id), origin)
        assert session.scalar(select(func.count(AuditEvent.id))) == before


def test_third_party_connector_is_never_granted_without_an_approved_review(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group = org.user(), org.group()
        vendor = org.connector(publisher="third_party", security_review="approved")
        create_mapping(session, origin, group, vendor, "read")
        org.join(ada, group)
        assert live_grants(session) == {(ada.id, vendor.id): "read"}
        # Review withdrawn: the connector must be disabled first, and then grants go.
        with pytest.raises(ValueError, match="security review"):
            update_connector(session, origin, vendor, security_review="rejected")
        assert vendor.security_review == "approved"
        diff = update_connector(session, origin, vendor, enabled=False)
        assert [c.revoke_reason for c in diff.revoked] == ["connector disabled"]
        assert live_grants(session) == {}
        # With the connector disabled, the review can be withdrawn.
        update_connector(session, origin, vendor, security_review="rejected")


def test_regulated_connector_needs_a_compliance_assessment(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        with pytest.raises(ValueError, match="compliance assessment"):
            org.connector("warehouse", data_classification="regulated")
    with database.transaction() as session:
        org = Org(session, origin)
        warehouse = org.connector(
            "warehouse", data_classification="regulated", compliance_assessment="DPIA-7"
        )
        assert warehouse.enabled


def test_desktop_extension_is_never_offered_on_web_or_mobile(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        with pytest.raises(ValueError, match="never on mobile, web"):
            org.connector(kind="desktop_extension", interfaces=["desktop", "web", "mobile"])


def test_expired_mapping_justifies_nothing(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group, connector = org.user(), org.group(), org.connector()
        org.join(ada, group)
        mapping, diff = create_mapping(
            session, origin, group, connector, "read", expires_at=later(1)
        )
        assert len(diff.created) == 1
        mapping.expires_at = utcnow() - dt.timedelta(seconds=1)
        diff = engine.apply(session, engine.Affected.group(group.id), origin)
        assert [c.user_id for c in diff.revoked] == [ada.id]


def test_exception_grants_outside_groups_and_needs_a_future_expiry(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        sam, connector = org.user(), org.connector()
        with pytest.raises(MappingError, match="expiry in the future"):
            create_exception(
                session,
                origin,
                sam,
                connector,
                "read",
                justification="audit",
                expires_at=utcnow() - dt.timedelta(days=1),
            )
        with pytest.raises(MappingError, match="justification"):
            create_exception(
                session, origin, sam, connector, "read", justification=" ", expires_at=later()
            )
        exception, diff = create_exception(
            session, origin, sam, connector, "read", justification="CR-311", expires_at=later()
        )
        assert diff.created[0].reasons == (f"exception:{exception.id}",)


def test_mapping_cannot_exceed_capability_or_name_unknown_actions(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        group = org.group()
        wiki = org.connector(capability="read", actions=[("get_page", "read", "always_allow")])
        with pytest.raises(MappingError, match="exceeds"):
            create_mapping(session, origin, group, wiki, "read_write")
        with pytest.raises(MappingError, match="no action"):
            create_mapping(session, origin, group, wiki, "read", actions=["drop_everything"])
        with pytest.raises(MappingError, match="policies must be"):
            create_mapping(session, origin, group, wiki, "read", policies={"get_page": "maybe"})
        assert session.scalar(select(func.count(Mapping.id))) == 0


def test_deleting_a_mapping_revokes_what_only_it_justified(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        group, connector = org.group(), org.connector()
        users = [org.user() for _ in range(4)]
        for user in users:
            org.join(user, group)
        mapping, _ = create_mapping(session, origin, group, connector, "read")
        diff = delete_mapping(session, origin, mapping)
        assert sorted(c.user_id for c in diff.revoked) == sorted(u.id for u in users)
        assert live_grants(session) == {}


def test_plan_changes_nothing(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        group, connector = org.group(), org.connector()
        org.join(org.user(), group)
        session.add(
            Mapping(
                group_id=group.id, connector_id=connector.id, access_level="read", created_by="t"
            )
        )
        session.flush()
        events = session.scalar(select(func.count(AuditEvent.id)))
        diff = engine.plan(session, engine.Affected.everyone())
        assert len(diff.created) == 1
        assert live_grants(session) == {}
        assert session.scalar(select(func.count(AuditEvent.id))) == events
