"""The effective policy of one call: deny rules, org policy as a cap, and grants adding up."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning.connectors.models import (
    AccessLevel,
    ActionKind,
    ConnectorKind,
    Interface,
    Policy,
)
from provisioning.entitlements.policy import (
    ActionFacts,
    ConnectorFacts,
    Decision,
    Entitlement,
    UserState,
    Verdict,
    effective_policy,
)

# --- The oracle: the rules written out by hand, independent of policy.py and models.py helpers.

# Which action kinds each access level lets a user call (a ladder, spelled out).
LEVEL_ALLOWS = {
    "read": {"read"},
    "read_write": {"read", "write"},
    "interactive": {"read", "write", "interactive"},
}
# The most powerful action kind at each capability (what an uncatalogued action counts as).
TOP_KIND = {"read": "read", "read_write": "write", "interactive": "interactive"}
# Policies from loosest to strictest.
STRICTNESS = {"always_allow": 0, "needs_approval": 1, "blocked": 2}
DECISION_OF_POLICY = {
    "always_allow": "allow",
    "needs_approval": "needs_approval",
    "blocked": "blocked",
}
# Decisions from loosest to strictest; deny (no access at all) is the strictest.
DECISION_STRICTNESS = {"allow": 0, "needs_approval": 1, "blocked": 2, "deny": 3}
DESKTOP_INTERFACES = {"desktop", "code"}

LEVELS = ["read", "read_write", "interactive"]
KINDS = ["read", "write", "interactive"]
POLICIES = ["always_allow", "needs_approval", "blocked"]
MAPPING_POLICIES = [None, *POLICIES]
INTERFACES = ["web", "mobile", "desktop", "code"]
USER_STATES = ["active", "deactivated", "offboarded", "deleted"]

ACTION = "do_thing"


def stricter(first: str, second: str | None) -> str:
    if second is None:
        return first
    return second if STRICTNESS[second] > STRICTNESS[first] else first


def grid_oracle(
    *,
    connector_kind: str,
    offered: set[str],
    level: str,
    kind: str,
    org_policy: str,
    mapping_policy: str | None,
    interface: str,
    user: str,
) -> str:
    """One entitlement, a connector of capability interactive, enabled and governed."""
    if user != "active":
        return "deny"
    if connector_kind == "desktop_extension" and interface not in DESKTOP_INTERFACES:
        return "deny"
    if interface not in offered:
        return "deny"
    if kind not in LEVEL_ALLOWS[level]:
        return "deny"
    return DECISION_OF_POLICY[stricter(org_policy, mapping_policy)]


def assert_reasons(verdict: Verdict) -> None:
    assert isinstance(verdict.reasons, tuple), verdict
    assert verdict.reasons, f"no reasons given for {verdict.decision}"
    for reason in verdict.reasons:
        assert isinstance(reason, str), verdict
        assert reason.strip(), f"empty reason in {verdict}"


# --- Builders.


def connector(
    *,
    kind: ConnectorKind = ConnectorKind.REMOTE,
    capability: AccessLevel = AccessLevel.INTERACTIVE,
    enabled: bool = True,
    interfaces: frozenset[Interface] = frozenset(Interface),
    governance_problems: tuple[str, ...] = (),
    unknown_action_policy: Policy = Policy.NEEDS_APPROVAL,
) -> ConnectorFacts:
    return ConnectorFacts(
        slug="tracker",
        kind=kind,
        capability=capability,
        enabled=enabled,
        interfaces=interfaces,
        governance_problems=governance_problems,
        unknown_action_policy=unknown_action_policy,
    )


def action(
    kind: ActionKind = ActionKind.READ, org_policy: Policy = Policy.ALWAYS_ALLOW
) -> ActionFacts:
    return ActionFacts(name=ACTION, kind=kind, org_policy=org_policy)


def grant(
    level: AccessLevel = AccessLevel.INTERACTIVE,
    *,
    source: str = "mapping:eng",
    actions: frozenset[str] | None = None,
    policies: dict[str, Policy] | None = None,
) -> Entitlement:
    return Entitlement(
        source=source, access_level=level, actions=actions, policies=dict(policies or {})
    )


def decide(
    *,
    user: UserState = UserState.ACTIVE,
    facts: ConnectorFacts | None = None,
    act: ActionFacts | None = None,
    name: str = ACTION,
    interface: Interface = Interface.DESKTOP,
    entitlements: list[Entitlement] | None = None,
) -> Verdict:
    verdict = effective_policy(
        user,
        facts if facts is not None else connector(),
        name,
        act,
        interface,
        entitlements if entitlements is not None else [grant()],
    )
    assert_reasons(verdict)
    return verdict


# --- 1. The full table.

CONNECTORS = {
    "remote": (ConnectorKind.REMOTE, frozenset(Interface)),
    "desktop_extension": (
        ConnectorKind.DESKTOP_EXTENSION,
        frozenset({Interface.DESKTOP, Interface.CODE}),
    ),
}
GRID = list(
    itertools.product(
        CONNECTORS, LEVELS, KINDS, POLICIES, MAPPING_POLICIES, INTERFACES, USER_STATES
    )
)


@pytest.mark.parametrize(
    ("connector_kind", "level", "kind", "org_policy", "mapping_policy", "interface", "user"),
    GRID,
    ids=["-".join(str(part) for part in row) for row in GRID],
)
def test_full_table(connector_kind, level, kind, org_policy, mapping_policy, interface, user):
    kind_enum, offered = CONNECTORS[connector_kind]
    policies = {} if mapping_policy is None else {ACTION: Policy(mapping_policy)}
    verdict = effective_policy(
        UserState(user),
        connector(kind=kind_enum, interfaces=offered),
        ACTION,
        action(ActionKind(kind), Policy(org_policy)),
        Interface(interface),
        [grant(AccessLevel(level), policies=policies)],
    )
    expected = grid_oracle(
        connector_kind=connector_kind,
        offered={str(i) for i in offered},
        level=level,
        kind=kind,
        org_policy=org_policy,
        mapping_policy=mapping_policy,
        interface=interface,
        user=user,
    )
    assert str(verdict.decision) == expected, (
        f"{connector_kind} connector, {level} grant, {kind} action, org {org_policy}, "
        f"mapping {mapping_policy}, on {interface}, user {user}: "
        f"expected {expected}, got {verdict.decision} {verdict.reasons}"
    )
    assert_reasons(verdict)


def test_full_table_covers_every_combination():
    assert len(GRID) == 2 * 3 * 3 * 3 * 4 * 4 * 4


# --- 2. Specific cases.


def test_disabled_connector_is_denied():
    verdict = decide(facts=connector(enabled=False), act=action())
    assert verdict.decision is Decision.DENY
    assert any("disabled" in reason for reason in verdict.reasons)


def test_governance_problems_deny_with_those_reasons():
    problems = ("needs an approved security review", "no recorded compliance assessment")
    verdict = decide(facts=connector(governance_problems=problems), act=action())
    assert verdict.decision is Decision.DENY
    assert verdict.reasons == problems


@pytest.mark.parametrize("interface", [Interface.MOBILE, Interface.DESKTOP, Interface.CODE])
def test_interface_not_offered_is_denied(interface):
    facts = connector(interfaces=frozenset({Interface.WEB}))
    assert decide(facts=facts, act=action(), interface=interface).decision is Decision.DENY
    assert decide(facts=facts, act=action(), interface=Interface.WEB).decision is Decision.ALLOW


@pytest.mark.parametrize("interface", [Interface.WEB, Interface.MOBILE])
def test_desktop_extension_is_denied_on_web_and_mobile_even_if_listed(interface):
    facts = connector(kind=ConnectorKind.DESKTOP_EXTENSION, interfaces=frozenset(Interface))
    assert decide(facts=facts, act=action(), interface=interface).decision is Decision.DENY
    assert decide(facts=facts, act=action(), interface=Interface.CODE).decision is Decision.ALLOW


def test_no_entitlements_is_denied():
    assert decide(act=action(), entitlements=[]).decision is Decision.DENY


def test_action_subset_that_does_not_list_the_action_is_denied():
    subset = grant(actions=frozenset({"other_thing"}))
    assert decide(act=action(), entitlements=[subset]).decision is Decision.DENY
    assert decide(act=action(), entitlements=[grant(actions=frozenset())]).decision is (
        Decision.DENY
    )


def test_action_subset_that_lists_the_action_grants_it():
    subset = grant(actions=frozenset({ACTION, "other_thing"}))
    assert decide(act=action(), entitlements=[subset]).decision is Decision.ALLOW


def test_subset_grant_and_full_grant_add_up():
    narrow = grant(AccessLevel.INTERACTIVE, source="a", actions=frozenset({"other_thing"}))
    wide = grant(AccessLevel.READ, source="b")
    act = action(ActionKind.READ, Policy.ALWAYS_ALLOW)
    assert decide(act=act, entitlements=[narrow, wide]).decision is Decision.ALLOW
    # The wide grant is too low for a write; the one that reaches write does not list it.
    write = action(ActionKind.WRITE, Policy.ALWAYS_ALLOW)
    assert decide(act=write, entitlements=[narrow, wide]).decision is Decision.DENY


@pytest.mark.parametrize(
    ("capability", "level", "unknown_policy", "has_subset"),
    list(itertools.product(LEVELS, LEVELS, POLICIES, [False, True])),
)
def test_unknown_action(capability, level, unknown_policy, has_subset):
    facts = connector(
        capability=AccessLevel(capability), unknown_action_policy=Policy(unknown_policy)
    )
    # A subset cannot cover an uncatalogued action, even one naming it.
    actions = frozenset({"not_catalogued"}) if has_subset else None
    verdict = decide(
        facts=facts,
        act=None,
        name="not_catalogued",
        entitlements=[grant(AccessLevel(level), actions=actions)],
    )
    reaches = TOP_KIND[capability] in LEVEL_ALLOWS[level]
    expected = DECISION_OF_POLICY[unknown_policy] if reaches and not has_subset else "deny"
    assert str(verdict.decision) == expected, (
        f"capability {capability}, grant {level}, subset {has_subset}: {verdict}"
    )


def test_unknown_action_needs_one_source_that_grants_everything_at_the_top_level():
    facts = connector(capability=AccessLevel.READ_WRITE, unknown_action_policy=Policy.ALWAYS_ALLOW)
    low_full = grant(AccessLevel.READ, source="low")
    high_subset = grant(AccessLevel.INTERACTIVE, source="high", actions=frozenset({"x"}))
    verdict = decide(facts=facts, act=None, name="x", entitlements=[low_full, high_subset])
    assert verdict.decision is Decision.DENY
    high_full = grant(AccessLevel.READ_WRITE, source="full")
    verdict = decide(
        facts=facts, act=None, name="x", entitlements=[low_full, high_subset, high_full]
    )
    assert verdict.decision is Decision.ALLOW


def test_unknown_action_policy_can_only_be_tightened_by_a_mapping():
    facts = connector(unknown_action_policy=Policy.NEEDS_APPROVAL)
    tighter = grant(policies={"x": Policy.BLOCKED})
    looser = grant(policies={"x": Policy.ALWAYS_ALLOW})
    assert decide(facts=facts, act=None, name="x", entitlements=[tighter]).decision is (
        Decision.BLOCKED
    )
    assert decide(facts=facts, act=None, name="x", entitlements=[looser]).decision is (
        Decision.NEEDS_APPROVAL
    )


@pytest.mark.parametrize(("capability", "kind"), list(itertools.product(LEVELS, KINDS)))
def test_action_kind_beyond_connector_capability_is_denied(capability, kind):
    facts = connector(capability=AccessLevel(capability))
    verdict = decide(
        facts=facts,
        act=action(ActionKind(kind), Policy.ALWAYS_ALLOW),
        entitlements=[grant(AccessLevel.INTERACTIVE)],
    )
    expected = "allow" if kind in LEVEL_ALLOWS[capability] else "deny"
    assert str(verdict.decision) == expected, verdict


def test_inactive_user_is_denied_before_anything_else():
    verdict = decide(user=UserState.OFFBOARDED, facts=connector(enabled=False), act=action())
    assert verdict.decision is Decision.DENY
    assert any("offboarded" in reason for reason in verdict.reasons)


# --- 3. Properties over random grants.

ACTION_NAMES = [ACTION, "other_thing", "third_thing"]

entitlements_st = st.builds(
    Entitlement,
    source=st.sampled_from(["mapping:a", "mapping:b", "mapping:c", "exception:1"]),
    access_level=st.sampled_from(list(AccessLevel)),
    actions=st.none() | st.frozensets(st.sampled_from(ACTION_NAMES), max_size=3),
    policies=st.dictionaries(st.sampled_from(ACTION_NAMES), st.sampled_from(list(Policy))),
)
grants_st = st.lists(entitlements_st, min_size=1, max_size=4)
actions_st = st.none() | st.builds(
    ActionFacts,
    name=st.just(ACTION),
    kind=st.sampled_from(list(ActionKind)),
    org_policy=st.sampled_from(list(Policy)),
)
connectors_st = st.builds(
    connector,
    capability=st.sampled_from(list(AccessLevel)),
    unknown_action_policy=st.sampled_from(list(Policy)),
)
interfaces_st = st.sampled_from(list(Interface))


def org_policy_of(facts: ConnectorFacts, act: ActionFacts | None) -> str:
    return str(facts.unknown_action_policy if act is None else act.org_policy)


def multi_oracle(facts: ConnectorFacts, act: ActionFacts | None, grants: list[Entitlement]) -> str:
    """Grants add up: the loosest of the sources that list and reach the action, each capped."""
    capability = str(facts.capability)
    kind = TOP_KIND[capability] if act is None else str(act.kind)
    if kind not in LEVEL_ALLOWS[capability]:
        return "deny"
    org_policy = org_policy_of(facts, act)
    candidates = []
    for entitlement in grants:
        lists = entitlement.actions is None or (act is not None and ACTION in entitlement.actions)
        if lists and kind in LEVEL_ALLOWS[str(entitlement.access_level)]:
            override = entitlement.policies.get(ACTION)
            candidates.append(stricter(org_policy, None if override is None else str(override)))
    if not candidates:
        return "deny"
    return DECISION_OF_POLICY[min(candidates, key=STRICTNESS.__getitem__)]


def run(facts, act, interface, grants) -> Verdict:
    verdict = effective_policy(UserState.ACTIVE, facts, ACTION, act, interface, grants)
    assert_reasons(verdict)
    return verdict


PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


@PROPERTY_SETTINGS
@given(connectors_st, actions_st, interfaces_st, grants_st)
def test_never_looser_than_org_policy(facts, act, interface, grants):
    decision = str(run(facts, act, interface, grants).decision)
    if decision != "deny":
        floor = DECISION_OF_POLICY[org_policy_of(facts, act)]
        assert DECISION_STRICTNESS[decision] >= DECISION_STRICTNESS[floor], (
            f"{decision} is looser than org policy {floor}"
        )


@PROPERTY_SETTINGS
@given(connectors_st, actions_st, interfaces_st, grants_st)
def test_org_blocked_stays_blocked(facts, act, interface, grants):
    if org_policy_of(facts, act) != "blocked":
        act = ActionFacts(act.name, act.kind, Policy.BLOCKED) if act is not None else act
        facts = connector(capability=facts.capability, unknown_action_policy=Policy.BLOCKED)
    decision = str(run(facts, act, interface, grants).decision)
    assert decision in {"blocked", "deny"}


@PROPERTY_SETTINGS
@given(connectors_st, actions_st, interfaces_st, grants_st, entitlements_st, st.data())
def test_adding_a_grant_never_makes_the_decision_stricter(
    facts, act, interface, grants, extra, data
):
    before = str(run(facts, act, interface, grants).decision)
    position = data.draw(st.integers(min_value=0, max_value=len(grants)), label="position")
    more = [*grants[:position], extra, *grants[position:]]
    after = str(run(facts, act, interface, more).decision)
    assert DECISION_STRICTNESS[after] <= DECISION_STRICTNESS[before], (
        f"adding {extra} turned {before} into {after}"
    )


@PROPERTY_SETTINGS
@given(connectors_st, actions_st, interfaces_st, grants_st, st.data())
def test_order_of_grants_does_not_matter(facts, act, interface, grants, data):
    shuffled = data.draw(st.permutations(grants), label="shuffled")
    assert run(facts, act, interface, grants).decision == (
        run(facts, act, interface, shuffled).decision
    )


@PROPERTY_SETTINGS
@given(connectors_st, actions_st, interfaces_st, grants_st)
def test_grants_add_up_as_the_oracle_says(facts, act, interface, grants):
    decision = str(run(facts, act, interface, grants).decision)
    assert decision == multi_oracle(facts, act, grants)
