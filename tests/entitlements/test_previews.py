"""Dry runs through the domain: the change runs for real, then its transaction is rolled back."""

from __future__ import annotations

from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.connectors.models import Connector
from provisioning.entitlements import mappings
from provisioning.entitlements.models import Grant, Mapping
from provisioning.entitlements.previews import preview
from provisioning.identity.models import Group
from tests.org import Org, later


def counts(database) -> tuple[int, int, int]:
    with database.reader() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model))
            for model in (Grant, Mapping, AuditEvent)
        )


def test_preview_returns_the_engine_diff_and_writes_nothing(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        group = org.group("eng")
        for _ in range(3):
            org.join(org.user(), group)
        org.connector("wiki")
    before = counts(database)

    def change(session):
        group_ = session.scalar(select(Group))
        connector = session.scalar(select(Connector))
        _, diff = mappings.create_mapping(session, origin, group_, connector, "read")
        return sorted((c.user_id, c.access_level) for c in diff.created)

    planned = preview(database, change)
    assert len(planned) == 3
    assert counts(database) == before
    with database.transaction() as session:
        done = change(session)
    assert done == planned


def test_update_mapping_and_revoke_exception_are_audited_and_applied(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group = org.user(), org.group()
        org.join(ada, group)
        github = org.connector("github", actions=(("search", "read", "always_allow"),))
        mapping, _ = mappings.create_mapping(session, origin, group, github, "read_write")
        diff = mappings.update_mapping(session, origin, mapping, access_level="read")
        assert [(c.previous_level, c.access_level) for c in diff.updated] == [
            ("read_write", "read")
        ]
        exception, _ = mappings.create_exception(
            session,
            origin,
            ada,
            org.connector("wiki"),
            "read",
            justification="x",
            expires_at=later(),
        )
        diff = mappings.revoke_exception(session, origin, exception, reason="done")
        assert [c.revoke_reason for c in diff.revoked] == ["no mapping or exception justifies it"]
    with database.reader() as session:
        actions = set(session.scalars(select(AuditEvent.action)))
    assert {"mapping.updated", "exception.revoked", "grant.updated", "grant.revoked"} <= actions
