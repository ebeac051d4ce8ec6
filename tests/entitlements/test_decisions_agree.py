"""Decisions agree with grants and with the documented policy, on random organisations.

An organisation is drawn at random (hypothesis) and written straight to the
tables: people in every state, groups, memberships present or removed,
connectors in every governance state (disabled, third-party with or without
an approved review, regulated with or without an assessment; remote or
desktop extension, on some interfaces), their actions with org policies,
mappings live or expired with action subsets and tightened policies,
exceptions live, expired or revoked, and access-review withdrawals dated
before, at or after those sources were created. The engine runs once for
everyone; then every person x connector x action (each catalogued one and an
uncatalogued one) x interface is asked of the decision path, by id and by
userName, and each answer must

- be a deny wherever the engine holds no live grant, and otherwise name that
  grant, whose level allows the action's kind;
- equal the policy written out in this file from docs/architecture.md
  ("Org policy caps everything"), computed from the drawn facts alone;
- equal the access matrix's entry (``GET /users/{id}/access``) for that grant.

The engine's grants are themselves checked against the drawn facts.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from provisioning.audit.log import Origin, Source
from provisioning.connectors.models import Action, Connector, Interface
from provisioning.database import utcnow
from provisioning.entitlements import access, engine
from provisioning.entitlements.decisions import Answer, Question, decide, decide_many
from provisioning.entitlements.models import Grant, ManualException, Mapping, ReviewRevocation
from provisioning.identity.models import Group, Membership, User
from tests.entitlements.test_engine_reference import LEVELS, RANK, grantable
from tests.entitlements.test_engine_reference import FakeConnector as Governed

ORIGIN = Origin(actor="agreement-test", source=Source.ADMIN)
# The level an action kind needs, and the most powerful kind a capability offers.
NEEDS = {"read": "read", "write": "read_write", "interactive": "interactive"}
TOP_KIND = {"read": "read", "read_write": "write", "interactive": "interactive"}
POLICIES = ["always_allow", "needs_approval", "blocked"]
STRICTNESS = {p: i for i, p in enumerate(POLICIES)}
INTERFACES = ["web", "mobile", "desktop", "code"]
STATES = ["active", "deactivated", "offboarded", "deleted"]
UNCATALOGUED = "not_in_catalogue"
# Times are hours before the run: sources are created, and reviews withdraw, at these.
HOURS = st.integers(1, 4)


@dataclass
class FakeConnector(Governed):
    """The engine reference test's connector, with what decisions read besides."""

    desktop: bool
    interfaces: list[str]
    unknown_policy: str
    actions: dict[str, tuple[str, str]]  # name: (kind, org policy)


def mostly(usual, *others):
    """Draws ``usual`` three times in four: most people are active, most connectors pass."""
    return st.sampled_from([usual, usual, usual, *others] if others else [usual])


connectors_st = st.builds(
    FakeConnector,
    enabled=mostly(True, False),
    publisher=st.sampled_from(["directory", "third_party", "internal"]),
    review=mostly("approved", "pending", "rejected"),
    classification=st.sampled_from(["internal", "regulated"]),
    assessed=mostly(True, False),
    capability=st.sampled_from(LEVELS),
    desktop=mostly(False, True),
    interfaces=st.lists(st.sampled_from(INTERFACES), unique=True, min_size=1, max_size=4),
    unknown_policy=st.sampled_from(POLICIES),
    actions=st.dictionaries(
        st.sampled_from(["search", "edit", "wizard"]),
        st.tuples(st.sampled_from(["read", "write", "interactive"]), st.sampled_from(POLICIES)),
        min_size=1,
        max_size=3,
    ),
)
subsets = st.none() | st.lists(
    st.sampled_from(["search", "edit", "wizard", UNCATALOGUED]), unique=True, max_size=2
)
overrides = st.dictionaries(
    st.sampled_from(["search", "edit", "wizard"]), st.sampled_from(POLICIES)
)


@st.composite
def organisations(draw):
    states = draw(st.lists(mostly(*STATES), min_size=1, max_size=4))
    n_groups = draw(st.integers(1, 3))
    connectors = draw(st.lists(connectors_st, min_size=1, max_size=3))
    users, cons = st.integers(0, len(states) - 1), st.integers(0, len(connectors) - 1)
    # Each person in each group: present, removed (a row kept absent), or never a member.
    cells = [(u, g) for u in range(len(states)) for g in range(n_groups)]
    rows = draw(st.lists(mostly(True, False, None), min_size=len(cells), max_size=len(cells)))
    memberships = {cell: row for cell, row in zip(cells, rows, strict=True) if row is not None}
    mappings = draw(
        st.dictionaries(
            st.tuples(st.integers(0, n_groups - 1), cons),
            # level, expired, actions, policies, created (hours ago)
            st.tuples(st.sampled_from(LEVELS), mostly(False, True), subsets, overrides, HOURS),
            min_size=1,
            max_size=6,
        )
    )
    exceptions = draw(
        st.lists(
            st.tuples(
                users,
                cons,
                st.sampled_from(LEVELS),
                mostly("live", "expired", "revoked"),
                subsets,
                HOURS,
            ),
            max_size=3,
        )
    )
    withdrawals = draw(st.lists(st.tuples(users, cons, HOURS), max_size=3))
    return states, n_groups, connectors, memberships, mappings, exceptions, withdrawals


def live_sources(org, u: int, c: int) -> list[tuple[str, frozenset[str] | None, dict[str, str]]]:
    """(level, action subset, policy overrides) of every live, unwithdrawn source of u's
    access to c, from the drawn facts alone."""
    _, _, _, memberships, mappings, exceptions, withdrawals = org

    def withdrawn(created: int) -> bool:
        # A review at or after a source's creation withdraws it (hours ago: fewer is later).
        return any((wu, wc) == (u, c) and hours <= created for wu, wc, hours in withdrawals)

    found = []
    for (g, mc), (level, expired, actions, policies, created) in mappings.items():
        if mc == c and memberships.get((u, g)) and not expired and not withdrawn(created):
            found.append((level, None if actions is None else frozenset(actions), policies))
    for eu, ec, level, state, actions, created in exceptions:
        if (eu, ec) == (u, c) and state == "live" and not withdrawn(created):
            found.append((level, None if actions is None else frozenset(actions), {}))
    return found


def expected_grant(org, u: int, c: int) -> str | None:
    """The level the engine should hold: eligible, grantable, some live source."""
    states, _, connectors, *_ = org
    sources = live_sources(org, u, c)
    if states[u] != "active" or not grantable(connectors[c]) or not sources:
        return None
    best = max((level for level, _, _ in sources), key=RANK.__getitem__)
    return min(best, connectors[c].capability, key=RANK.__getitem__)


def expected_decision(org, u: int, c: int, action: str, interface: str) -> str:
    """docs/architecture.md, "Org policy caps everything", written out plainly."""
    states, _, connectors, *_ = org
    connector = connectors[c]
    sources = live_sources(org, u, c)
    if states[u] != "active" or not grantable(connector):
        return "deny"
    if connector.desktop and interface not in ("desktop", "code"):
        return "deny"
    if interface not in connector.interfaces or not sources:
        return "deny"
    if action in connector.actions:
        kind, org_policy = connector.actions[action]
        if RANK[connector.capability] < RANK[NEEDS[kind]]:
            return "deny"
        listed = [s for s in sources if s[1] is None or action in s[1]]
    else:
        kind, org_policy = TOP_KIND[connector.capability], connector.unknown_policy
        listed = [s for s in sources if s[1] is None]
    covering = [s for s in listed if RANK[s[0]] >= RANK[NEEDS[kind]]]
    if not covering:
        return "deny"
    tightened = [
        max(org_policy, policies.get(action, org_policy), key=STRICTNESS.__getitem__)
        for _, _, policies in covering
    ]
    loosest = min(tightened, key=STRICTNESS.__getitem__)
    return "allow" if loosest == "always_allow" else loosest


def write(session, org):
    """The drawn organisation as rows; returns the users' and connectors' rows."""
    states, n_groups, connectors, memberships, mappings, exceptions, withdrawals = org
    now = utcnow()

    def ago(hours: int) -> dt.datetime:
        return now - dt.timedelta(hours=hours)

    users = []
    for i, state in enumerate(states):
        user = User(
            id=uuid.uuid4(),
            user_name=f"Person{i}@Example.com",
            user_name_key=f"person{i}@example.com",
            active=state not in ("deactivated",),
            offboarded_at=now if state == "offboarded" else None,
            deleted_at=now if state == "deleted" else None,
        )
        session.add(user)
        users.append(user)
    groups = [Group(id=uuid.uuid4(), display_name=f"g{i}") for i in range(n_groups)]
    session.add_all(groups)
    rows = []
    for i, c in enumerate(connectors):
        connector = Connector(
            slug=f"c{i}",
            name=f"c{i}",
            kind="desktop_extension" if c.desktop else "remote",
            capability=c.capability,
            publisher=c.publisher,
            security_review=c.review,
            data_classification=c.classification,
            compliance_assessment="DPIA-1" if c.assessed else None,
            interfaces=c.interfaces,
            unknown_action_policy=c.unknown_policy,
            enabled=c.enabled,
        )
        connector.actions = [
            Action(name=name, kind=kind, org_policy=policy)
            for name, (kind, policy) in c.actions.items()
        ]
        session.add(connector)
        rows.append(connector)
    session.flush()
    for (u, g), present in memberships.items():
        session.add(
            Membership(user_id=users[u].id, group_id=groups[g].id, present=present, source="scim")
        )
    for (g, c), (level, expired, actions, policies, created) in mappings.items():
        session.add(
            Mapping(
                group_id=groups[g].id,
                connector_id=rows[c].id,
                access_level=level,
                actions=actions,
                policies=policies or None,
                expires_at=now - dt.timedelta(minutes=1) if expired else None,
                created_by="t",
                created_at=ago(created),
            )
        )
    for u, c, level, state, actions, created in exceptions:
        session.add(
            ManualException(
                user_id=users[u].id,
                connector_id=rows[c].id,
                access_level=level,
                actions=actions,
                justification="t",
                expires_at=now + dt.timedelta(days=-1 if state == "expired" else 1),
                revoked_at=now if state == "revoked" else None,
                created_by="t",
                created_at=ago(created),
            )
        )
    for u, c, hours in withdrawals:
        session.add(
            ReviewRevocation(
                user_id=users[u].id, connector_id=rows[c].id, revoked_at=ago(hours), revoked_by="t"
            )
        )
    session.flush()
    return users, rows


@settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(org=organisations())
def test_decisions_agree_with_grants_and_the_documented_policy(fresh_database, org):
    database = fresh_database()
    try:
        with database.transaction() as session:
            users, connectors = write(session, org)
            engine.apply(session, engine.Affected.everyone(), ORIGIN)
            people = [(u.id, u.user_name) for u in users]
            slugs = [c.slug for c in connectors]
            connector_ids = [c.id for c in connectors]
        with database.reader() as session:
            grants = {
                (user_id, connector_id): (grant_id, level)
                for grant_id, user_id, connector_id, level in session.execute(
                    select(Grant.id, Grant.user_id, Grant.connector_id, Grant.access_level).where(
                        Grant.revoked_at.is_(None)
                    )
                )
            }
            matrix = {
                (user_id, grant.connector, action.name, interface): decision
                for user_id, _ in people
                for grant in access.of_user(session, session.get(User, user_id))
                for action in grant.actions
                for interface, decision in action.effective.items()
            }
            asked: list[tuple[Question, Answer]] = []
            for u, (user_id, user_name) in enumerate(people):
                for c, (slug, connector_id) in enumerate(zip(slugs, connector_ids, strict=True)):
                    held = grants.get((user_id, connector_id))
                    assert (held and str(held[1])) == (expected_grant(org, u, c) or None)
                    names = [*org[2][c].actions, UNCATALOGUED]
                    for action in names:
                        for interface in INTERFACES:
                            question = Question(str(user_id), slug, action, Interface(interface))
                            answer = decide(session, question)
                            named = Question(user_name, slug, action, Interface(interface))
                            by_name = decide(session, named)
                            asked += [(question, answer), (named, by_name)]
                            where = (org[0][u], slug, action, interface, answer.reasons)
                            assert str(answer.decision) == expected_decision(
                                org, u, c, action, interface
                            ), where
                            if org[0][u] == "deleted":  # userName is free again once deleted
                                assert str(by_name.decision) == "deny", where
                            else:
                                assert by_name.decision == answer.decision, where
                            offered = interface in org[2][c].interfaces
                            if held is not None and action != UNCATALOGUED and offered:
                                key = (user_id, slug, action, interface)
                                assert str(matrix[key]) == str(answer.decision), where
                            if str(answer.decision) == "deny":
                                continue
                            assert held is not None, where
                            assert answer.grant_id == held[0], where
                            kind = org[2][c].actions.get(action, (TOP_KIND[org[2][c].capability],))[
                                0
                            ]
                            assert RANK[str(held[1])] >= RANK[NEEDS[kind]], where
            # Asked all at once, set-wise (a batch), each answer is the one asked alone; so
            # is a stranger's, and one about a connector nobody has.
            web = Interface.WEB
            asked += [
                (q, decide(session, q))
                for q in (
                    Question("stranger", slugs[0], "x", web),
                    Question(people[0][1], "nowhere", "x", web),
                )
            ]
            questions = [q for q, _ in asked]
            assert decide_many(session, questions) == [a for _, a in asked]
    finally:
        if database.dialect == "sqlite":
            database.dispose()
