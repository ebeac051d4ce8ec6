"""The engine against a brute-force reference on random organisations (hypothesis).

An organisation is drawn at random (users in every state, memberships present
or removed, connectors passing or failing governance, mappings live or
expired, exceptions live, expired or revoked), written straight to the
tables, and the engine's grants are compared with a reference computed in
Python from the same facts. Then random changes are made and applied, with
the same comparison, and the audit log must hold exactly one event per
grant created and per grant revoked.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from provisioning.audit.log import Origin, Source, verify
from provisioning.audit.models import AuditEvent
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.entitlements import engine
from provisioning.entitlements.models import Grant, ManualException, Mapping
from provisioning.identity.models import Group, Membership, User

LEVELS = ["read", "read_write", "interactive"]
RANK = {"read": 1, "read_write": 2, "interactive": 3}
ORIGIN = Origin(actor="property-test", source=Source.ADMIN)


@dataclass
class FakeUser:
    active: bool
    offboarded: bool
    deleted: bool


@dataclass
class FakeConnector:
    enabled: bool
    publisher: str
    review: str
    classification: str
    assessed: bool
    capability: str


users_st = st.builds(FakeUser, st.booleans(), st.booleans(), st.booleans()).map(
    # Most users are ordinary active people, as in life.
    lambda u: u if not (u.active and (u.offboarded or u.deleted)) else FakeUser(True, False, False)
)
connectors_st = st.builds(
    FakeConnector,
    enabled=st.booleans(),
    publisher=st.sampled_from(["directory", "third_party", "internal"]),
    review=st.sampled_from(["pending", "approved", "rejected"]),
    classification=st.sampled_from(["public", "internal", "confidential", "regulated"]),
    assessed=st.booleans(),
    capability=st.sampled_from(LEVELS),
)


@st.composite
def organisations(draw):
    users = draw(st.lists(users_st, min_size=1, max_size=7))
    n_groups = draw(st.integers(1, 4))
    connectors = draw(st.lists(connectors_st, min_size=1, max_size=4))
    memberships = draw(
        st.dictionaries(
            st.tuples(st.integers(0, len(users) - 1), st.integers(0, n_groups - 1)),
            st.booleans(),  # present
            max_size=20,
        )
    )
    mappings = draw(
        st.dictionaries(
            st.tuples(st.integers(0, n_groups - 1), st.integers(0, len(connectors) - 1)),
            st.tuples(st.sampled_from(LEVELS), st.booleans()),  # level, expired
            max_size=10,
        )
    )
    exceptions = draw(
        st.lists(
            st.tuples(
                st.integers(0, len(users) - 1),
                st.integers(0, len(connectors) - 1),
                st.sampled_from(LEVELS),
                st.sampled_from(["live", "expired", "revoked"]),
            ),
            max_size=4,
        )
    )
    return users, n_groups, connectors, memberships, mappings, exceptions


def grantable(c: FakeConnector) -> bool:
    return (
        c.enabled
        and (c.publisher != "third_party" or c.review == "approved")
        and (c.classification != "regulated" or c.assessed)
    )


def reference(org) -> dict[tuple[int, int], str]:
    """What access should exist, written out plainly from invariant 1 (docs/architecture.md)."""
    users, _, connectors, memberships, mappings, exceptions = org
    levels: dict[tuple[int, int], list[str]] = {}
    for (u, g), present in memberships.items():
        for (mg, c), (level, expired) in mappings.items():
            if mg == g and present and not expired:
                levels.setdefault((u, c), []).append(level)
    for u, c, level, state in exceptions:
        if state == "live":
            levels.setdefault((u, c), []).append(level)
    desired = {}
    for (u, c), granted in levels.items():
        user, connector = users[u], connectors[c]
        if not (user.active and not user.offboarded and not user.deleted):
            continue
        if not grantable(connector):
            continue
        best = max(granted, key=RANK.__getitem__)
        desired[(u, c)] = min(best, connector.capability, key=RANK.__getitem__)
    return desired


class Written:
    """The random organisation as rows, with its ids."""

    def __init__(self, session, org) -> None:
        users, n_groups, connectors, memberships, mappings, exceptions = org
        now = utcnow()
        self.user_ids = [uuid.uuid4() for _ in users]
        self.group_ids = [uuid.uuid4() for _ in range(n_groups)]
        for i, (uid, u) in enumerate(zip(self.user_ids, users, strict=True)):
            session.add(
                User(
                    id=uid,
                    user_name=f"u{i}",
                    user_name_key=f"u{i}",
                    active=u.active,
                    offboarded_at=now if u.offboarded else None,
                    deleted_at=now if u.deleted else None,
                )
            )
        for i, gid in enumerate(self.group_ids):
            session.add(Group(id=gid, display_name=f"g{i}"))
        self.connectors = []
        for i, c in enumerate(connectors):
            connector = Connector(
                slug=f"c{i}",
                name=f"c{i}",
                kind="remote",
                capability=c.capability,
                publisher=c.publisher,
                security_review=c.review,
                data_classification=c.classification,
                compliance_assessment="DPIA" if c.assessed else None,
                interfaces=["web"],
                enabled=c.enabled,
            )
            session.add(connector)
            self.connectors.append(connector)
        session.flush()
        self.connector_ids = [c.id for c in self.connectors]
        for (u, g), present in memberships.items():
            session.add(
                Membership(
                    user_id=self.user_ids[u],
                    group_id=self.group_ids[g],
                    present=present,
                    source="scim",
                )
            )
        for (g, c), (level, expired) in mappings.items():
            session.add(
                Mapping(
                    group_id=self.group_ids[g],
                    connector_id=self.connector_ids[c],
                    access_level=level,
                    expires_at=now - dt.timedelta(hours=1) if expired else None,
                    created_by="t",
                )
            )
        for u, c, level, state in exceptions:
            session.add(
                ManualException(
                    user_id=self.user_ids[u],
                    connector_id=self.connector_ids[c],
                    access_level=level,
                    justification="t",
                    expires_at=now + dt.timedelta(days=1 if state != "expired" else -1),
                    revoked_at=now if state == "revoked" else None,
                    created_by="t",
                )
            )
        session.flush()

    def live(self, session) -> dict[tuple[int, int], str]:
        user_index = {uid: i for i, uid in enumerate(self.user_ids)}
        connector_index = {cid: i for i, cid in enumerate(self.connector_ids)}
        rows = session.execute(
            select(Grant.user_id, Grant.connector_id, Grant.access_level).where(
                Grant.revoked_at.is_(None)
            )
        )
        return {(user_index[u], connector_index[c]): str(level) for u, c, level in rows}


changes_st = st.lists(
    st.one_of(
        st.tuples(st.just("deactivate"), st.integers(0, 6)),
        st.tuples(st.just("reactivate"), st.integers(0, 6)),
        st.tuples(st.just("toggle_membership"), st.integers(0, 6), st.integers(0, 3)),
        st.tuples(st.just("toggle_connector"), st.integers(0, 3)),
        st.tuples(st.just("drop_mappings_of_group"), st.integers(0, 3)),
    ),
    max_size=5,
)


def change(session, org, written, step) -> engine.Affected:
    """Make one change to the facts (in the model and the rows); return who it affects."""
    users, n_groups, connectors, memberships, mappings, _ = org
    kind = step[0]
    if kind in ("deactivate", "reactivate"):
        u = step[1] % len(users)
        users[u].active = kind == "reactivate"
        session.execute(
            update(User).where(User.id == written.user_ids[u]).values(active=users[u].active)
        )
        return engine.Affected.users(written.user_ids[u])
    if kind == "toggle_membership":
        u, g = step[1] % len(users), step[2] % n_groups
        present = not memberships.get((u, g), False)
        membership = session.get(Membership, (written.user_ids[u], written.group_ids[g]))
        if membership is None:
            session.add(
                Membership(
                    user_id=written.user_ids[u],
                    group_id=written.group_ids[g],
                    present=present,
                    source="okta-hook",
                )
            )
        else:
            membership.present = present
        memberships[(u, g)] = present
        return engine.Affected.users(written.user_ids[u])
    if kind == "toggle_connector":
        c = step[1] % len(connectors)
        connectors[c].enabled = not connectors[c].enabled
        session.execute(
            update(Connector)
            .where(Connector.id == written.connector_ids[c])
            .values(enabled=connectors[c].enabled)
        )
        return engine.Affected.connector(written.connector_ids[c])
    g = step[1] % n_groups
    for key in [k for k in mappings if k[0] == g]:
        del mappings[key]
    session.query(Mapping).filter(Mapping.group_id == written.group_ids[g]).delete()
    return engine.Affected.group(written.group_ids[g])


def check_audit(session) -> None:
    """Exactly one grant.created per grant and one grant.revoked per revoked grant."""
    events = session.execute(
        select(AuditEvent.action, AuditEvent.subject_id).where(AuditEvent.subject_type == "grant")
    ).all()
    created = Counter(s for a, s in events if a == "grant.created")
    revoked = Counter(s for a, s in events if a == "grant.revoked")
    grants = session.execute(select(Grant.id, Grant.revoked_at)).all()
    assert created == Counter(str(g) for g, _ in grants)
    assert revoked == Counter(str(g) for g, at in grants if at is not None)
    assert verify(session).intact


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(org=organisations(), steps=changes_st)
def test_engine_matches_the_reference_and_is_idempotent(fresh_database, org, steps):
    database = fresh_database()
    try:
        with database.transaction() as session:
            written = Written(session, org)
            engine.apply(session, engine.Affected.everyone(), ORIGIN)
        with database.transaction() as session:
            assert written.live(session) == reference(org)
            # A second run changes nothing.
            assert not engine.apply(session, engine.Affected.everyone(), ORIGIN)
        for step in steps:
            with database.transaction() as session:
                affected = change(session, org, written, step)
                session.flush()
                engine.apply(session, affected, ORIGIN)
            with database.transaction() as session:
                # Applying to the affected users alone was enough: everyone agrees.
                assert written.live(session) == reference(org)
                assert not engine.apply(session, engine.Affected.everyone(), ORIGIN)
        with database.reader() as session:
            check_audit(session)
    finally:
        if database.dialect == "sqlite":
            database.dispose()
