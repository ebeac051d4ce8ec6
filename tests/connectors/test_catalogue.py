"""Connectors and actions: governance guards hold, refusals change nothing, every change audited."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.connectors.catalogue import update_connector
from provisioning.connectors.governance import GovernanceError
from provisioning.connectors.models import Connector
from tests.org import Org


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_third_party_cannot_be_enabled_before_an_approved_review(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        with pytest.raises(GovernanceError, match="approved security review"):
            org.connector(publisher="third_party", security_review="pending")
        vendor = org.connector(
            "vendor", publisher="third_party", security_review="pending", enabled=False
        )
        with pytest.raises(GovernanceError, match="approved security review"):
            update_connector(session, origin, vendor, enabled=True)
        assert vendor.enabled is False
        update_connector(session, origin, vendor, security_review="approved", enabled=True)
        assert vendor.enabled is True


def test_refused_change_leaves_the_connector_and_audit_untouched(database, origin):
    with database.transaction() as session:
        connector = Org(session, origin).connector("warehouse")
    with database.transaction() as session:
        connector = session.get(Connector, connector.id)
        events = count(session, AuditEvent)
        with pytest.raises(GovernanceError, match="compliance assessment"):
            update_connector(session, origin, connector, data_classification="regulated")
        with pytest.raises(GovernanceError, match="unknown connector field"):
            update_connector(session, origin, connector, colour="red")
        with pytest.raises(GovernanceError, match="interfaces are"):
            update_connector(session, origin, connector, interfaces=["fax"])
        assert connector.data_classification == "internal"
        assert count(session, AuditEvent) == events


def test_desktop_extension_interfaces(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        local = org.connector(kind="desktop_extension", interfaces=["desktop", "code"])
        with pytest.raises(GovernanceError, match="never on web"):
            update_connector(session, origin, local, interfaces=["desktop", "web"])


def test_actions_start_at_needs_approval_and_respect_capability(database, origin):
    from provisioning.connectors.catalogue import add_action

    with database.transaction() as session:
        wiki = Org(session, origin).connector(capability="read")
        action = add_action(session, origin, wiki, name="get_page", kind="read")
        assert action.org_policy == "needs_approval"
        with pytest.raises(GovernanceError, match="cannot offer write"):
            add_action(session, origin, wiki, name="edit_page", kind="write")
        actions = session.scalars(select(AuditEvent.action)).all()
        assert actions.count("action.created") == 1


def test_duplicate_slug_is_refused(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        org.connector("github")
        with pytest.raises(GovernanceError, match="already exists"):
            org.connector("github")
