"""Concurrent writers: the audit chain never forks and no grant is materialised twice."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from provisioning.audit.log import verify
from provisioning.audit.models import AuditEvent
from provisioning.entitlements import engine
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant, Mapping
from provisioning.identity.models import Group, User
from tests.org import Org

WRITERS = 8


def test_concurrent_engine_runs_serialise(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        group, connector = org.group(), org.connector()
        users = [org.user() for _ in range(WRITERS)]
        create_mapping(session, origin, group, connector, "read")
    user_ids, group_id = [u.id for u in users], group.id
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(user_id):
        try:
            start.wait()
            with database.transaction() as session:
                Org(session, origin).join(session.get(User, user_id), session.get(Group, group_id))
            # And everyone recomputes everything at the same time, too.
            with database.transaction() as session:
                engine.apply(session, engine.Affected.everyone(), origin)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(uid,)) for uid in user_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with database.reader() as session:
        result = verify(session)
        assert result.intact, result.problem
        live = session.scalar(select(func.count(Grant.id)).where(Grant.revoked_at.is_(None)))
        assert live == WRITERS
        assert session.scalar(select(func.count(Grant.id))) == WRITERS
        created = select(func.count(AuditEvent.id)).where(AuditEvent.action == "grant.created")
        assert session.scalar(created) == WRITERS


def test_everyone_in_batches_equals_everyone_at_once(database, origin, monkeypatch):
    with database.transaction() as session:
        org = Org(session, origin)
        group, connector = org.group(), org.connector()
        for _ in range(12):
            org.join(org.user(), group)
        session.add(
            Mapping(
                group_id=group.id, connector_id=connector.id, access_level="read", created_by="t"
            )
        )
        session.flush()
        at_once = engine.plan(session, engine.Affected.everyone())
        monkeypatch.setattr(engine, "_ALL_USERS_BATCH", 5)
        batched = engine.plan(session, engine.Affected.everyone())
        assert len(at_once.created) == 12
        assert sorted(c.user_id for c in batched.created) == sorted(
            c.user_id for c in at_once.created
        )
