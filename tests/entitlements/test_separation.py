"""Separation of duties: preventive through check_grant, detective through the scan."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from provisioning.audit.log import Origin, Source
from provisioning.database import utcnow
from provisioning.entitlements import separation
from provisioning.entitlements.mappings import (
    SeparationConflict,
    create_exception,
    create_mapping,
)
from provisioning.entitlements.models import Grant, SeparationExemption
from provisioning.oversight.models import Finding, FindingKind, FindingState
from provisioning.oversight.scan import scan
from tests.org import Org, later

ORIGIN = Origin("property", Source.ADMIN)
USERS, CONNECTORS = 4, 5

# A rule's part: (connector index, None) for the whole connector, or (index, action).
# Every connector offers a read action ``a0`` and a write action ``a1``.
ACTIONS = (("a0", "read", "always_allow"), ("a1", "write", "always_allow"))
KIND = {"a0": "read", "a1": "write"}
part = st.tuples(st.integers(0, CONNECTORS - 1), st.sampled_from([None, "a0", "a1"]))


def _disjoint(pair) -> bool:
    return not any(
        a == b or (a[0] == b[0] and None in (a[1], b[1])) for a in pair[0] for b in pair[1]
    )


sides = st.tuples(
    st.sets(part, min_size=1, max_size=2), st.sets(part, min_size=1, max_size=2)
).filter(_disjoint)
# A source of access: (user, connector, access level, action subset or None).
source = st.tuples(
    st.integers(0, USERS - 1),
    st.integers(0, CONNECTORS - 1),
    st.sampled_from(["read", "read_write"]),
    st.sampled_from([None, ("a0",), ("a1",), ("a0", "a1")]),
)


def _live(session) -> set[tuple]:
    return set(
        session.execute(
            select(Grant.user_id, Grant.connector_id).where(Grant.revoked_at.is_(None))
        ).all()
    )


def _open_findings(session) -> set[str]:
    """The subjects (``RULE:USER``) of the open separation-of-duties findings."""
    return set(
        session.scalars(
            select(Finding.subject_id).where(
                Finding.kind == FindingKind.SEPARATION_VIOLATION,
                Finding.state == FindingState.OPEN,
            )
        )
    )


def _rules(session, connectors, rules) -> list:
    """The generated rules (sides as parts over connector indexes), made through the domain."""
    from provisioning.connectors.models import Action

    def entry(c, action):
        if action is None:
            return connectors[c]
        return session.scalar(
            select(Action).where(Action.connector_id == connectors[c].id, Action.name == action)
        )

    return [
        separation.create_rule(
            session,
            ORIGIN,
            name=f"rule-{n}",
            these=[entry(*p) for p in sorted(these, key=str)],
            those=[entry(*p) for p in sorted(those, key=str)],
            owner="risk@example.com",
            reason="four eyes",
        )
        for n, (these, those) in enumerate(rules)
    ]


def _holds(sources: set[tuple], user: int, part: tuple) -> bool:
    """Brute force: a source of the user on the part's connector gives it (the whole
    connector; or the action listed, at a level allowing its kind)."""
    c, action = part
    for u, connector, level, actions in sources:
        if u != user or connector != c:
            continue
        if action is None:
            return True
        if (actions is None or action in actions) and (
            KIND[action] == "read" or level == "read_write"
        ):
            return True
    return False


def _reference(sources: set[tuple], rules: list) -> set[tuple]:
    """Brute force: (rule index, user) for every user holding a part of each side."""
    found = set()
    for index, (these, those) in enumerate(rules):
        for user in {s[0] for s in sources}:
            if any(_holds(sources, user, p) for p in these) and any(
                _holds(sources, user, p) for p in those
            ):
                found.add((index, user))
    return found


def _sources(session, user_ids, connector_ids) -> set[tuple]:
    from provisioning.entitlements.models import ManualException

    return {
        (
            user_ids.index(e.user_id),
            connector_ids.index(e.connector_id),
            str(e.access_level),
            tuple(e.actions) if e.actions is not None else None,
        )
        for e in session.scalars(
            select(ManualException).where(
                ManualException.revoked_at.is_(None), ManualException.expires_at > utcnow()
            )
        )
    }


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    held=st.sets(source),
    rules=st.lists(sides, min_size=1, max_size=4),
)
def test_a_rule_over_an_existing_org_finds_exactly_the_violators(fresh_database, held, rules):
    database = fresh_database()
    try:
        with database.transaction() as session:
            org = Org(session, ORIGIN)
            users = [org.user() for _ in range(USERS)]
            connectors = [org.connector(actions=ACTIONS) for _ in range(CONNECTORS)]
            for u, c, level, actions in sorted(held, key=str):
                create_exception(
                    session,
                    ORIGIN,
                    users[u],
                    connectors[c],
                    level,
                    justification="x",
                    expires_at=later(5),
                    actions=list(actions) if actions is not None else None,
                )
            made = _rules(session, connectors, rules)
            counts = scan(session)
        user_ids = [u.id for u in users]
        expected = {(made[i].id, user_ids[u]) for i, u in _reference(held, rules)}
        with database.reader() as session:
            found = {(rule.id, user) for rule, user in separation.violators(session)}
            assert found == expected
            findings = _open_findings(session)
            assert findings == {f"{r}:{u}" for r, u in expected}
            assert counts["separation_violation"]["opened"] == len(expected)
    finally:
        database.dispose()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rules=st.lists(sides, min_size=1, max_size=3),
    grants=st.lists(source),
)
def test_no_order_of_deliberate_grants_breaks_a_rule(fresh_database, rules, grants):
    database = fresh_database()
    try:
        with database.transaction() as session:
            org = Org(session, ORIGIN)
            users = [org.user() for _ in range(USERS)]
            connectors = [org.connector(actions=ACTIONS) for _ in range(CONNECTORS)]
            _rules(session, connectors, rules)
            ids = ([u.id for u in users], [c.id for c in connectors])
        for u, c, level, actions in grants:
            try:
                with database.transaction() as session:
                    org = Org(session, ORIGIN)
                    from provisioning.connectors.models import Connector
                    from provisioning.identity.models import User

                    create_exception(
                        session,
                        ORIGIN,
                        session.get(User, ids[0][u]),
                        session.get(Connector, ids[1][c]),
                        level,
                        justification="x",
                        expires_at=later(5),
                        actions=list(actions) if actions is not None else None,
                    )
            except SeparationConflict as refused:
                assert refused.conflict.rule.startswith("rule-")
            with database.reader() as session:
                assert list(separation.violators(session)) == []
                assert _reference(_sources(session, *ids), rules) == set()
    finally:
        database.dispose()


@pytest.fixture
def ops(database, origin):
    """Ada holds payments-approve; a rule forbids it with payments-create."""
    with database.transaction() as session:
        org = Org(session, origin)
        ada, bob = org.user("ada@example.com"), org.user("bob@example.com")
        approve, create = org.connector("payments-approve"), org.connector("payments-create")
        create_exception(
            session, origin, ada, approve, "read", justification="cfo", expires_at=later(30)
        )
        rule = org.rule(
            "payments four eyes", [approve], [create], "who approves a payment never creates one"
        )
        return {"ada": ada.id, "bob": bob.id, "create": create.id, "rule": rule.id}


def test_an_exception_and_a_mapping_that_would_break_a_rule_are_refused(database, origin, ops):
    from provisioning.connectors.models import Connector
    from provisioning.identity.models import User

    with database.transaction() as session:
        ada, bob = session.get(User, ops["ada"]), session.get(User, ops["bob"])
        create = session.get(Connector, ops["create"])
        with pytest.raises(SeparationConflict, match="payments four eyes"):
            create_exception(
                session, origin, ada, create, "read", justification="x", expires_at=later(1)
            )
        org = Org(session, origin)
        group = org.group("finance")
        org.join(ada, group)
        org.join(bob, group)
        with pytest.raises(SeparationConflict, match="payments four eyes"):
            create_mapping(session, origin, group, create, "read")
        assert (ada.id, create.id) not in _live(session)


def test_an_exemption_lets_one_person_through_until_it_expires(database, origin, ops):
    from provisioning.connectors.models import Connector
    from provisioning.entitlements.models import SeparationRule
    from provisioning.identity.models import User

    with database.transaction() as session:
        ada = session.get(User, ops["ada"])
        create = session.get(Connector, ops["create"])
        rule = session.get(SeparationRule, ops["rule"])
        separation.exempt(
            session, origin, rule, ada.id, justification="quarter close", expires_at=later(2)
        )
        create_exception(
            session, origin, ada, create, "read", justification="close", expires_at=later(10)
        )
        assert (ada.id, create.id) in _live(session)
        assert list(separation.violators(session)) == []
        assert scan(session)["separation_violation"]["opened"] == 0
    with database.transaction() as session:
        session.execute(
            update(SeparationExemption).values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )
        assert [(r.id, u) for r, u in separation.violators(session)] == [(ops["rule"], ada.id)]
        assert scan(session)["separation_violation"]["opened"] == 1
        # Resolved once the violation goes: by the engine run that ended it.
        from provisioning.entitlements.mappings import revoke_exception
        from provisioning.entitlements.models import ManualException

        (latest,) = session.scalars(
            select(ManualException).where(ManualException.connector_id == create.id)
        ).all()
        revoke_exception(session, origin, latest)
        assert session.scalars(select(Finding.state)).all() == [FindingState.RESOLVED]
        assert scan(session)["separation_violation"]["resolved"] == 0


def test_a_rule_needs_two_disjoint_sides_and_a_new_name(database, origin, ops):
    from provisioning.connectors.models import Connector

    with database.transaction() as session:
        create = session.get(Connector, ops["create"])
        for kwargs in (
            {"name": "x", "these": [create], "those": [create]},
            {"name": "x", "these": [], "those": [create]},
            {"name": "payments four eyes", "these": [create], "those": [create]},
        ):
            with pytest.raises(separation.SeparationError):
                separation.create_rule(session, origin, owner="o", reason="r", **kwargs)


def test_the_engine_never_grants_into_a_violation_silently(database, origin, ops):
    """A membership (the IdP's fact, not refused) that grants into a violation is audited
    and found by the scan."""
    from provisioning.audit.models import AuditEvent
    from provisioning.connectors.models import Connector
    from provisioning.identity.models import User

    with database.transaction() as session:
        org = Org(session, origin)
        group = org.group("payments")
        create_mapping(session, origin, group, session.get(Connector, ops["create"]), "read")
        org.join(session.get(User, ops["bob"]), group)  # Bob holds nothing incompatible
        org.join(session.get(User, ops["ada"]), group)  # Ada holds payments-approve
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "separation.violated")
        ).all()
        assert [(e.user_id, e.subject_id) for e in events] == [(ops["ada"], str(ops["rule"]))]
        # The engine opened the finding the scan would have; the scan finds it still open.
        assert scan(session)["separation_violation"] == {
            "opened": 0,
            "still_open": 1,
            "resolved": 0,
        }


GROUPS = 3
# A mapping: (group, connector, access level, action subset or None); one per pair.
mapping = st.tuples(
    st.integers(0, GROUPS - 1),
    st.integers(0, CONNECTORS - 1),
    st.sampled_from(["read", "read_write"]),
    st.sampled_from([None, ("a0",), ("a1",), ("a0", "a1")]),
)
# A membership fact as SCIM or an event hook states it: (user, group, present).
step = st.tuples(st.integers(0, USERS - 1), st.integers(0, GROUPS - 1), st.booleans())


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rules=st.lists(sides, min_size=1, max_size=3),
    mappings=st.lists(mapping, max_size=6, unique_by=lambda m: (m[0], m[1])),
    steps=st.lists(step, min_size=1, max_size=12),
)
def test_every_violation_onset_from_memberships_is_said_once(
    fresh_database, rules, mappings, steps
):
    """Whatever the order of IdP memberships: after each engine run, every person breaking
    a rule has a ``separation.violated`` for it recorded when the violation began (a new
    grant, a level raised or a grant's actions widened), none is said twice while it lasts,
    and the open findings are exactly the violations."""
    from provisioning.audit.models import AuditEvent

    database = fresh_database()
    try:
        with database.transaction() as session:
            org = Org(session, ORIGIN)
            users = [org.user() for _ in range(USERS)]
            groups = [org.group() for _ in range(GROUPS)]
            connectors = [org.connector(actions=ACTIONS) for _ in range(CONNECTORS)]
            for g, c, level, actions in mappings:  # no members yet: nothing to refuse
                create_mapping(
                    session,
                    ORIGIN,
                    groups[g],
                    connectors[c],
                    level,
                    actions=list(actions) if actions is not None else None,
                )
            _rules(session, connectors, rules)
            ids = [u.id for u in users], [g.id for g in groups]
        violating: set[tuple] = set()
        said: dict[tuple, int] = {}
        for u, g, present in steps:
            from provisioning.identity.models import Group, User

            with database.transaction() as session:
                org = Org(session, ORIGIN)
                user, group = session.get(User, ids[0][u]), session.get(Group, ids[1][g])
                (org.join if present else org.leave)(user, group)
            with database.reader() as session:
                now = {(rule.id, user) for rule, user in separation.violators(session)}
                events = session.execute(
                    select(AuditEvent.subject_id, AuditEvent.user_id).where(
                        AuditEvent.action == "separation.violated"
                    )
                ).all()
                counted: dict[tuple, int] = {}
                for subject, user_id in events:
                    key = (int(subject), user_id)
                    counted[key] = counted.get(key, 0) + 1
                for key in set(counted) | set(said):
                    new = counted.get(key, 0) - said.get(key, 0)
                    began = key in now and key not in violating
                    assert new == (1 if began else 0), (key, new, began)
                findings = _open_findings(session)
                assert findings == {f"{r}:{u}" for r, u in now}
            assert all(key in counted for key in now - violating)
            violating, said = now, counted
    finally:
        database.dispose()
