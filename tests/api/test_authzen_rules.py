"""AuthZEN rules that must hold for all inputs: one source of truth with /api/v1/decisions,
batch semantics, search paging while grants change, the COAZ-MCP resources, hostile bodies."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioning.entitlements import engine
from provisioning.entitlements.mappings import create_exception, create_mapping
from provisioning.tokens.secrets import APPROVAL_BINDINGS, shared
from tests import hostile
from tests.api.conftest import Api, make_app
from tests.entitlements.test_decisions_agree import (
    ORIGIN,
    UNCATALOGUED,
    grantable,
    live_sources,
    organisations,
    write,
)
from tests.org import Org, later
from tests.rows import rows

CHECK = ["decisions:check"]
INTERFACES = ["web", "mobile", "desktop", "code"]
ACTIONS = (
    ("search", "read", "always_allow"),
    ("merge", "write", "needs_approval"),
    ("drop", "write", "blocked"),
    ("chat", "interactive", "always_allow"),
)
# The codes of a deny that comes after the person's use of the connector is established.
ACTION_DENIALS = {
    "action_not_offered",
    "action_not_granted",
    "access_level_insufficient",
    "unknown_action",
}
PEOPLE = ["ada", "bo", "cy", "di", "ex"]
CONNECTORS = ["github", "wiki", "desk", "off", "docs"]


@pytest.fixture
def org(api, origin):
    """People, groups and connectors covering each rule of the engine: an inactive person,
    a desktop extension, a disabled connector, a read-only one, action subsets, tightened
    policies, an exception, a person with nothing."""
    with api.database.transaction() as session:
        org = Org(session, origin)
        people = {name: org.user(name, email=f"{name}@example.com") for name in PEOPLE[:-1]}
        people["ex"] = org.user("ex", active=False)
        eng, ops = org.group("eng"), org.group("ops")
        for name in ("ada", "bo", "ex"):
            org.join(people[name], eng)
        org.join(people["cy"], ops)
        github = org.connector(
            "github",
            actions=ACTIONS,
            capability="interactive",
            resource_uri="https://mcp.github.example/mcp",
        )
        wiki = org.connector(
            "wiki",
            actions=ACTIONS[:1],
            capability="read",
            resource_uri="https://wiki.example/mcp",
            interfaces=["web", "code"],
        )
        desk = org.connector(
            "desk", actions=ACTIONS[:2], kind="desktop_extension", interfaces=["desktop"]
        )
        off = org.connector("off", actions=ACTIONS[:1])
        docs = org.connector("docs", actions=(("search", "read", "always_allow"),))
        create_mapping(
            session, origin, eng, github, "read_write", policies={"search": "needs_approval"}
        )
        create_mapping(session, origin, ops, github, "interactive", actions=["search", "chat"])
        create_mapping(session, origin, eng, wiki, "read")
        create_mapping(session, origin, ops, desk, "read_write")
        create_mapping(session, origin, eng, off, "read")
        create_exception(
            session, origin, people["di"], docs, "read", justification="audit", expires_at=later()
        )
        off.enabled = False
    return people


def check(user, connector, action, interface):
    return {"user": user, "connector": connector, "action": action, "interface": interface}


def authzen(user, connector, action, interface):
    return {
        "subject": {"type": "user", "id": user},
        "action": {"name": action},
        "resource": {"type": "connector", "id": connector},
        "context": {"interface": interface},
    }


def test_authzen_agrees_with_the_decision_api_for_every_question(api, org):
    """Every person (and a stranger) x connector (and an unknown one) x action (and an
    uncatalogued one) x interface: AuthZEN's decision is true exactly when the decision API
    says allow, and its context names the decision API's outcome."""
    names = [a[0] for a in ACTIONS] + ["unlisted"]
    questions = list(
        itertools.product([*PEOPLE, "stranger"], [*CONNECTORS, "nowhere"], names, INTERFACES)
    )
    ours = api.post(
        "/api/v1/decisions/batch", json={"checks": [check(*q) for q in questions[:100]]}
    )
    assert ours.status_code == 200
    expected = []
    for start in range(0, len(questions), 100):
        chunk = [check(*q) for q in questions[start : start + 100]]
        expected += api.post("/api/v1/decisions/batch", json={"checks": chunk}).json["results"]
    answers = []
    for start in range(0, len(questions), 500):
        chunk = [authzen(*q) for q in questions[start : start + 500]]
        response = api.post("/access/v1/evaluations", json={"evaluations": chunk}, scopes=CHECK)
        assert response.status_code == 200, response.json
        answers += response.json["evaluations"]
    assert len(answers) == len(expected) == len(questions)
    outcomes = Counter()
    for question, theirs, mine in zip(questions, expected, answers, strict=True):
        assert mine["decision"] is (theirs["decision"] == "allow"), question
        assert mine["context"]["outcome"] == theirs["decision"], question
        outcomes[theirs["decision"]] += 1
    assert set(outcomes) == {"allow", "needs_approval", "blocked", "deny"}
    codes = {a["context"]["reason"] for a in answers}
    assert {"user_inactive", "no_grant", "interface_not_offered", "connector_disabled"} <= codes
    assert {"unknown_subject", "unknown_resource", "unknown_action", "needs_approval"} <= codes


# -- batch semantics ------------------------------------------------------------------------

# (question, whether it is allowed): ada's calls, one unreadable evaluation.
POOL = [
    (authzen("ada", "github", "merge", "web"), False),  # needs approval
    (authzen("ada", "wiki", "search", "web"), True),
    (authzen("bo", "github", "drop", "web"), False),  # blocked
    (authzen("cy", "github", "chat", "code"), True),
    (authzen("ex", "wiki", "search", "web"), False),  # inactive
    ({"subject": {"type": "user", "id": "ada"}}, False),  # no action, no resource
]


@settings(
    max_examples=hostile.budget(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(picks=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=12))
def test_batch_semantics(api, org, picks):
    items = [POOL[i][0] for i in picks]
    truth = [POOL[i][1] for i in picks]

    def run(semantic):
        body = {"evaluations": items, "options": {"evaluations_semantic": semantic}}
        response = api.post("/access/v1/evaluations", json=body, scopes=CHECK)
        assert response.status_code == 200, response.json
        return [e["decision"] for e in response.json["evaluations"]]

    every = run("execute_all")
    assert every == truth  # in request order, one answer each
    deny_first = run("deny_on_first_deny")
    stop = truth.index(False) + 1 if False in truth else len(truth)
    assert deny_first == every[:stop]
    permit_first = run("permit_on_first_permit")
    stop = truth.index(True) + 1 if True in truth else len(truth)
    assert permit_first == every[:stop]


@settings(
    max_examples=hostile.budget(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    picks=st.lists(st.integers(0, len(POOL) - 2), min_size=1, max_size=8),
    default=st.sampled_from(["subject", "action", "resource", "context"]),
)
def test_defaults_merge_whole_entities(api, org, picks, default):
    """Moving one entity to the top level as a default (items that carry their own keep
    theirs) answers as the fully written batch does."""
    items = [dict(POOL[i][0]) for i in picks]
    full = api.post("/access/v1/evaluations", json={"evaluations": items}, scopes=CHECK)
    shared = items[0][default]
    merged = [
        {k: v for k, v in item.items() if not (k == default and v == shared)} for item in items
    ]
    body = {default: shared, "evaluations": merged}
    response = api.post("/access/v1/evaluations", json=body, scopes=CHECK)
    assert [e["decision"] for e in response.json["evaluations"]] == [
        e["decision"] for e in full.json["evaluations"]
    ]


# -- COAZ-MCP -------------------------------------------------------------------------------


def coaz(subject, method, resource, agent="claude-code"):
    return {
        "subject": {"type": "identity", "id": subject},
        "context": {"agent": agent},
        "action": {"name": method},
        "resource": resource,
    }


def test_coaz_mcp_tools_call_and_server_methods(api, org):
    tool = {
        "type": "tool",
        "id": "chat",
        "properties": {"mcp_server": "https://mcp.github.example/mcp"},
    }
    server = {"type": "mcp_server", "id": "https://wiki.example/mcp"}
    cases = [
        (coaz("cy", "tools/call", tool), True),
        (coaz("ada", "tools/call", tool), False),  # ada's read_write does not reach chat
        (coaz("ada@example.com", "tools/call", {"type": "tool", "id": "chat"}), False),
        (coaz("00000", "tools/call", tool), False),
        (coaz("ada", "tools/list", server), True),
        (coaz("ada", "initialize", server), True),
        (coaz("cy", "tools/list", server), False),  # no grant of the wiki
        (coaz("ada", "tools/call", server), False),
        (coaz("ex", "tools/list", server), False),
    ]
    for body, allowed in cases:
        response = api.post("/access/v1/evaluation", json=body, scopes=CHECK)
        assert response.status_code == 200, response.json
        assert response.json["decision"] is allowed, (body, response.json)
    # A tool of several servers, without its server named, is ambiguous: false.
    search = coaz("cy", "tools/call", {"type": "tool", "id": "search"})
    answer = api.post("/access/v1/evaluation", json=search, scopes=CHECK).json
    assert answer["decision"] is False and answer["context"]["reason"] == "ambiguous_tool"
    # needs_approval says what the gateway must do.
    merge = coaz("ada", "tools/call", {**tool, "id": "merge"})
    answer = api.post("/access/v1/evaluation", json=merge, scopes=CHECK).json
    assert answer["decision"] is False
    assert answer["context"]["reason"] == "needs_approval"
    assert answer["context"]["approval"]["type"] == "confirmation"


def test_resource_search_filters_a_servers_tools_list(api, org):
    body = {
        "subject": {"type": "identity", "id": "cy"},
        "action": {"name": "tools/call"},
        "resource": {
            "type": "tool",
            "properties": {"mcp_server": "https://mcp.github.example/mcp"},
        },
        "context": {"interface": "code"},
    }
    response = api.post("/access/v1/search/resource", json=body, scopes=CHECK)
    assert [r["id"] for r in response.json["results"]] == ["chat", "search"]
    eng = {**body, "subject": {"type": "identity", "id": "bo"}}
    response = api.post("/access/v1/search/resource", json=eng, scopes=CHECK)
    assert [r["id"] for r in response.json["results"]] == []  # search needs approval for eng
    servers = {**body, "subject": {"type": "user", "id": "ada"}, "action": {"name": "tools/list"}}
    servers["resource"] = {"type": "mcp_server"}
    response = api.post("/access/v1/search/resource", json=servers, scopes=CHECK)
    assert response.json["results"] == [
        {"type": "mcp_server", "id": "https://mcp.github.example/mcp"},
        {"type": "mcp_server", "id": "https://wiki.example/mcp"},
    ]


# -- search paging while grants change ------------------------------------------------------


def test_subject_search_pages_are_stable_and_a_revocation_shows_at_once(api, origin):
    with api.database.transaction() as session:
        org = Org(session, origin)
        people = [org.user(f"p{i:02}") for i in range(12)]
        group = org.group("all")
        for p in people:
            org.join(p, group)
        github = org.connector("github", actions=ACTIONS[:1])
        create_mapping(session, origin, group, github, "read")
    body = {
        "subject": {"type": "user"},
        "action": {"name": "search"},
        "resource": {"type": "connector", "id": "github"},
        "page": {"limit": 5},
    }
    seen = []
    page = api.post("/access/v1/search/subject", json=body, scopes=CHECK).json
    seen += [r["id"] for r in page["results"]]
    # Between pages: one already listed and one not yet listed lose their access.
    with api.database.transaction() as session:
        org = Org(session, origin)
        from provisioning.identity.models import Group, User

        group = session.query(Group).filter_by(display_name="all").one()
        for name in ("p01", "p08"):
            org.leave(session.query(User).filter_by(user_name=name).one(), group)
    while page["page"]["next_token"]:
        body["page"]["token"] = page["page"]["next_token"]
        page = api.post("/access/v1/search/subject", json=body, scopes=CHECK).json
        seen += [r["id"] for r in page["results"]]
    assert len(seen) == len(set(seen))  # nothing twice
    assert "p08" not in seen  # revoked before its page: gone at once
    assert seen == sorted(seen)
    assert set(seen) == {f"p{i:02}" for i in range(12)} - {"p08"}
    again = api.post("/access/v1/search/subject", json={**body, "page": {}}, scopes=CHECK).json
    assert "p01" not in [r["id"] for r in again["results"]]


# -- hostile bodies -------------------------------------------------------------------------

ROUTES = [
    "/access/v1/evaluation",
    "/access/v1/evaluations",
    "/access/v1/search/subject",
    "/access/v1/search/resource",
    "/access/v1/search/action",
    "/access/v1/requests",  # the approval profile's Access Request Endpoint
]
FIELDS = (
    "subject",
    "action",
    "resource",
    "context",
    "evaluations",
    "options",
    "page",
    "type",
    "id",
    "name",
    "properties",
    "token",
    "limit",
    "denial",
    "binding_token",
    "expires_at",
    "requested_access",
    "items",
)


def test_no_authzen_request_is_a_server_error_and_a_refused_one_writes_nothing(api, org):
    """Budget: 300 examples in CI; EDGE_FUZZ_EXAMPLES for more."""
    token = api.static_token("fuzzer", CHECK)
    shared(api.database, APPROVAL_BINDINGS)  # the binding key, made on first use: made now
    tally: Counter = Counter()
    good = [authzen("ada", "github", "merge", "web"), POOL[1][0]]
    documents = (
        st.sampled_from(good)
        | hostile.json_values(FIELDS)
        | st.fixed_dictionaries(
            {
                "evaluations": st.lists(
                    st.sampled_from(good) | hostile.json_values(FIELDS), max_size=4
                )
            },
            optional={k: hostile.json_values(FIELDS) for k in FIELDS[:7] if k != "evaluations"},
        )
        | st.builds(
            lambda base, key, value: {**base, key: value},
            st.sampled_from(good),
            st.sampled_from(FIELDS),
            hostile.json_values(FIELDS),
        )
    )

    @settings(max_examples=hostile.budget(300), deadline=None)
    @given(route=st.sampled_from(ROUTES), payload=hostile.bodies(documents))
    def check_one(route, payload):
        body, content_type = payload
        headers = {"Authorization": f"Bearer {token}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        before = rows(api.database)
        response = api.client.post(route, data=body, headers=headers)
        tally[hostile.status_class(response.status_code)] += 1
        assert response.status_code < 500, (route, body[:200], response.get_data(as_text=True))
        if response.status_code >= 400:
            assert response.mimetype == "application/problem+json"
        assert rows(api.database) == before  # evaluations, searches, refusals write nothing

    check_one()
    print(hostile.report("authzen", tally))


def test_subject_search_says_who_can_call_a_tool(api, org):
    body = {
        "subject": {"type": "identity"},
        "action": {"name": "tools/call"},
        "resource": {
            "type": "tool",
            "id": "chat",
            "properties": {"mcp_server": "https://mcp.github.example/mcp"},
        },
        "context": {"interface": "code"},
    }
    response = api.post("/access/v1/search/subject", json=body, scopes=CHECK)
    assert response.json == {"results": [{"type": "identity", "id": "cy"}]}
    merge = {**body, "resource": {**body["resource"], "id": "merge"}}
    response = api.post("/access/v1/search/subject", json=merge, scopes=CHECK)
    assert response.json == {"results": []}  # needs approval for everyone: no permit
    actions = {"subject": {"type": "user", "id": "cy"}, "resource": body["resource"]}
    response = api.post("/access/v1/search/action", json=actions, scopes=CHECK)
    assert response.json == {"results": [{"name": "tools/call"}]}


# Which gate of docs/architecture.md ("Org policy caps everything") turns a question down
# first, from the drawn facts: the code AuthZEN must give for it.
def first_denial(org, u: int, c: int, interface: str) -> str | None:
    states, _, connectors, *_ = org
    connector = connectors[c]
    if states[u] != "active":
        return "user_inactive"
    if not grantable(connector):
        return "connector_disabled" if not connector.enabled else "connector_not_approved"
    if connector.desktop and interface not in ("desktop", "code"):
        return "interface_not_offered"
    if interface not in connector.interfaces:
        return "interface_not_offered"
    if not live_sources(org, u, c):
        return "no_grant"
    return None


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(org=organisations())
def test_authzen_agrees_with_the_decision_api_on_generated_orgs(fresh_database, issuer, org):
    """A generated organisation (tests/entitlements/test_decisions_agree.py's): every person x
    connector x action (each catalogued one and an uncatalogued one) x interface is asked of
    ``/api/v1/decisions/batch`` and, in one ``/access/v1/evaluations`` batch per person (by
    userName, acting through an agent), of the AuthZEN edge. AuthZEN says true exactly for an
    allow, names the same outcome and reasons, and its reason code is the outcome itself or,
    for a deny, the first gate the drawn facts fail."""
    database = fresh_database()
    try:
        with database.transaction() as session:
            users, connectors = write(session, org)
            engine.apply(session, engine.Affected.everyone(), ORIGIN)
            people = [(str(u.id), u.user_name) for u in users]
            slugs = [c.slug for c in connectors]
        client = Api(make_app(database, issuer), database, issuer)
        for u, (user_id, user_name) in enumerate(people):
            questions = [
                (c, slug, action, interface)
                for c, slug in enumerate(slugs)
                for action in [*org[2][c].actions, UNCATALOGUED]
                for interface in INTERFACES
            ]
            ours = client.post(
                "/api/v1/decisions/batch",
                json={"checks": [check(user_id, *q[1:]) for q in questions]},
            )
            assert ours.status_code == 200, ours.json
            # A deleted person's userName is free again: ask for them by id.
            subject = user_id if org[0][u] == "deleted" else user_name
            theirs = client.post(
                "/access/v1/evaluations",
                json={
                    "subject": {"type": "user", "id": subject},
                    "context": {"agent": "claude-code"},
                    "evaluations": [
                        {
                            "action": {"name": action},
                            "resource": {"type": "connector", "id": slug},
                            "context": {"interface": interface},
                        }
                        for _, slug, action, interface in questions
                    ],
                },
                scopes=CHECK,
            )
            assert theirs.status_code == 200, theirs.json
            answers = zip(questions, ours.json["results"], theirs.json["evaluations"], strict=True)
            for (c, slug, action, interface), expected, answer in answers:
                where = (org[0][u], slug, action, interface, expected["reasons"])
                outcome = expected["decision"]
                assert answer["decision"] is (outcome == "allow"), where
                context = answer["context"]
                assert context["outcome"] == outcome, where
                assert context["message"] == "; ".join(expected["reasons"]), where
                if outcome != "deny":
                    assert context["reason"] == outcome, where
                    continue
                denial = first_denial(org, u, c, interface)
                if denial is None:  # past the grant: the action itself is turned down
                    denial = context["reason"]
                    assert denial in ACTION_DENIALS, where
                    assert denial != "unknown_action" or action == UNCATALOGUED, where
                assert context["reason"] == denial, where
    finally:
        if database.dialect == "sqlite":
            database.dispose()
