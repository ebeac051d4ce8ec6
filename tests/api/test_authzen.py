"""The AuthZEN Authorization API 1.0 against a live server: the certification scenario's
Basic Core, Batch Core, Search Core and Discovery tests on its fixture (made through the
public APIs), the specification's examples, and what an evaluation records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from provisioning.database import utcnow
from provisioning.entitlements.decisions import LastUseRecorder
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from tests.api.authzen_fixture import Live, certification_fixture, serve
from tests.org import Org
from tests.rows import rows

ALICE, BOB = {"type": "user", "id": "alice"}, {"type": "user", "id": "bob"}
READ, WRITE = {"name": "read"}, {"name": "write"}
RECORD_1, RECORD_2 = {"type": "record", "id": "record-1"}, {"type": "record", "id": "record-2"}
EVALUATION, EVALUATIONS = "/access/v1/evaluation", "/access/v1/evaluations"


@pytest.fixture
def live(database, issuer) -> Iterator[Live]:
    yield from serve(database, issuer)


@pytest.fixture
def fixture(live) -> Live:
    certification_fixture(live)
    return live


def ask(subject=ALICE, action=READ, resource=RECORD_1, **extra) -> dict:
    return {"subject": subject, "action": action, "resource": resource, **extra}


def decision(live: Live, body: dict, path: str = EVALUATION) -> bool:
    response = live.post(path, body)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert isinstance(response.json()["decision"], bool)
    assert isinstance(response.json().get("context", {}), dict)
    return response.json()["decision"]


# -- Basic Core ----------------------------------------------------------------------------


def test_basic_core_fixture_decisions(fixture):
    """2.2.1-2.2.3, 2.2.8, 2.2.9 and 2.3: a boolean decision, a context that is an object."""
    assert decision(fixture, ask()) is True  # rule 1
    assert decision(fixture, ask(action=WRITE)) is True  # rule 2
    assert decision(fixture, ask(BOB)) is True  # rule 3
    assert decision(fixture, ask(BOB, WRITE)) is False  # rule 4
    context = {"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"}
    assert decision(fixture, ask(context=context)) is True  # 2.2.3
    extra = ask(
        {**ALICE, "properties": {"department": "Sales", "role": "manager"}},
        {**READ, "properties": {"method": "GET"}},
        {**RECORD_1, "properties": {"status": "active", "owner": "bob"}},
    )
    assert decision(fixture, extra) is True  # 2.2.8
    assert decision(fixture, ask(foo="bar", futureField={"nested": True})) is True  # 2.2.9


def test_a_response_context_is_an_object_with_reason_and_evaluation_id(fixture):
    denied = fixture.post(EVALUATION, ask(BOB, WRITE)).json()
    assert denied["context"]["reason"] == "access_level_insufficient"
    assert isinstance(denied["context"]["evaluation_id"], str)
    allowed = fixture.post(EVALUATION, ask()).json()
    assert allowed["context"]["reason"] == "allow"


BAD = [
    ("missing subject", {"action": READ, "resource": RECORD_1}),
    ("missing action", {"subject": ALICE, "resource": RECORD_1}),
    ("missing resource", {"subject": ALICE, "action": READ}),
    ("subject without type", ask({"id": "alice"})),
    ("subject without id", ask({"type": "user"})),
    ("action without name", ask(action={})),
    ("resource without type", ask(resource={"id": "record-1"})),
    ("resource without id", ask(resource={"type": "record"})),
    ("subject a string", ask("alice")),
    ("action.name a number", ask(action={"name": 123})),
    ("unknown subject type", ask({"type": "spaceship", "id": "alice"})),
    ("unknown resource type", ask(resource={"type": "spaceship", "id": "record-1"})),
    ("properties not an object", ask({**ALICE, "properties": [1]})),
    ("a bad interface", ask(context={"interface": "fax"})),
]


@pytest.mark.parametrize("path", [EVALUATION, EVALUATIONS])
def test_basic_core_errors_are_400_and_record_nothing(fixture, path):
    before = rows(fixture.database)
    for name, body in BAD:
        response = fixture.post(path, body)
        assert response.status_code == 400, (name, response.text)
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.json()["detail"], name
    raw = [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b'{"subject": {"type": "user", "id": "alice"}}', "text/plain"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
    ]
    for data, content_type in raw:
        response = fixture.pep.post(
            fixture.base + path, data=data, headers={"Content-Type": content_type}
        )
        assert response.status_code == 400, (data, response.text)
    assert rows(fixture.database) == before


def test_x_request_id_is_echoed_on_answers_and_errors(fixture):
    headers = {"X-Request-ID": "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"}
    ok = fixture.post(EVALUATION, ask(), headers=headers)
    assert ok.headers["X-Request-ID"] == headers["X-Request-ID"]
    bad = fixture.post(EVALUATION, {"action": READ}, headers=headers)
    assert bad.status_code == 400 and bad.headers["X-Request-ID"] == headers["X-Request-ID"]
    assert fixture.post(EVALUATION, ask()).status_code == 200  # absent: no failure
    for method, path in (("GET", EVALUATION), ("POST", "/access/v1/nowhere")):
        other = fixture.pep.request(method, fixture.base + path, headers=headers, timeout=10)
        assert other.status_code in (404, 405)
        assert other.headers["X-Request-ID"] == headers["X-Request-ID"]
    elsewhere = fixture.admin.get(fixture.base + "/api/v1/connectors", headers=headers)
    assert elsewhere.headers["X-Request-ID"] == headers["X-Request-ID"]  # every answer echoes


def test_evaluations_are_idempotent(fixture):
    assert {decision(fixture, ask(BOB, WRITE)) for _ in range(5)} == {False}
    assert {decision(fixture, ask()) for _ in range(5)} == {True}


def test_authenticated_like_the_decision_api(fixture):
    anonymous = fixture.scim.post(fixture.base + EVALUATION, json=ask(), timeout=10)
    assert anonymous.status_code == 403  # a SCIM token lacks decisions:check
    nobody = fixture.pep.post(
        fixture.base + EVALUATION, json=ask(), headers={"Authorization": ""}, timeout=10
    )
    assert nobody.status_code == 401 and "WWW-Authenticate" in nobody.headers
    assert fixture.admin.get(fixture.base + "/.well-known/authzen-configuration").status_code == 403


# -- Batch Core ----------------------------------------------------------------------------


def evaluations(live: Live, body: dict) -> list[bool]:
    """The decisions of a batch, checked as 3.3 asks: as many as asked, each a boolean, and
    no top-level decision."""
    response = live.post(EVALUATIONS, body)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    answers = response.json()["evaluations"]
    assert len(answers) == len(body["evaluations"])
    assert "decision" not in response.json()
    assert all(isinstance(a["decision"], bool) for a in answers)
    return [a["decision"] for a in answers]


def test_batch_core(fixture):
    both = {
        "subject": ALICE,
        "action": READ,
        "evaluations": [{"resource": RECORD_1}, {"resource": RECORD_2}],
    }
    assert len(evaluations(fixture, both)) == 2  # 3.2.1
    ordered = {
        "subject": BOB,
        "resource": RECORD_1,
        "evaluations": [{"action": READ}, {"action": WRITE}],
    }
    assert evaluations(fixture, ordered) == [True, False]  # 3.2.2
    full = {"evaluations": [ask(), ask(BOB, WRITE)]}
    assert evaluations(fixture, full) == [True, False]  # 3.2.5
    inherited = {
        "subject": ALICE,
        "action": READ,
        "context": {"time": "2025-06-27T18:03-07:00"},
        "evaluations": [
            {"resource": RECORD_1},
            {"resource": RECORD_2, "context": {"time": "2025-06-27T19:00-07:00", "source": "x"}},
        ],
    }
    assert len(evaluations(fixture, inherited)) == 2  # 3.2.6
    failing = {
        "subject": ALICE,
        "action": READ,
        "options": {"evaluations_semantic": "execute_all"},
        "evaluations": [{"resource": RECORD_1}, {}],
    }
    response = fixture.post(EVALUATIONS, failing)  # 3.4.1
    answers = response.json()["evaluations"]
    assert [a["decision"] for a in answers] == [True, False]
    assert answers[1]["context"]["error"]["status"] == 400
    for body in (ask(), ask(evaluations=[])):  # 3.4.2, 3.4.3
        response = fixture.post(EVALUATIONS, body)
        assert response.status_code == 200 and response.json()["decision"] is True
        assert "evaluations" not in response.json()


def test_batch_limits_and_whole_request_errors_are_400(fixture):
    before = rows(fixture.database)
    for body in (
        {"subject": ALICE, "action": READ, "evaluations": [{"resource": RECORD_1}] * 1001},
        {"evaluations": "all"},
        {"evaluations": [ask()], "options": {"evaluations_semantic": "some"}},
        {"evaluations": [ask()], "options": []},
        {"subject": "alice", "evaluations": [ask()]},
    ):
        response = fixture.post(EVALUATIONS, body)
        assert response.status_code == 400, response.text
    assert rows(fixture.database) == before


# -- Search Core ---------------------------------------------------------------------------


def results(live: Live, kind: str, body: dict) -> list[dict]:
    response = live.post(f"/access/v1/search/{kind}", body)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()["results"]


def test_search_core(fixture):
    context = {"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"}
    who = {"subject": {"type": "user"}, "action": READ, "resource": RECORD_1}
    expected = [{"type": "user", "id": "alice"}, {"type": "user", "id": "bob"}]
    assert results(fixture, "subject", who) == expected  # 4.2.1
    assert results(fixture, "subject", {**who, "context": context}) == expected  # 4.2.2
    assert results(fixture, "subject", {**who, "subject": ALICE}) == expected  # 4.2.3
    which = {"subject": ALICE, "action": READ, "resource": {"type": "record"}}
    found = [{"type": "record", "id": "record-1"}, {"type": "record", "id": "record-2"}]
    assert results(fixture, "resource", which) == found  # 4.3.1
    assert results(fixture, "resource", {**which, "context": context}) == found  # 4.3.2
    assert results(fixture, "resource", {**which, "resource": RECORD_1}) == found  # 4.3.3
    what = {"subject": ALICE, "resource": RECORD_1}
    names = [{"name": "read"}, {"name": "write"}]  # delete needs approval: not a permit
    assert results(fixture, "action", what) == names  # 4.4.1
    assert results(fixture, "action", {**what, "context": context}) == names  # 4.4.2
    assert results(fixture, "action", {**what, "subject": BOB}) == [{"name": "read"}]


def test_search_paging(fixture):
    who = {"subject": {"type": "user"}, "action": READ, "resource": RECORD_1}
    first = fixture.post("/access/v1/search/subject", {**who, "page": {"limit": 1}}).json()
    assert first["results"] == [{"type": "user", "id": "alice"}]
    assert first["page"]["next_token"]
    second = fixture.post(
        "/access/v1/search/subject",
        {**who, "page": {"limit": 1, "token": first["page"]["next_token"]}},
    ).json()
    assert second["results"] == [{"type": "user", "id": "bob"}]
    assert second["page"]["next_token"] == ""
    # 4.5.2: the harness sends the token alone; the first page's limit holds. Another
    # limit with the token is another search.
    follow = {**who, "page": {"token": first["page"]["next_token"]}}
    response = fixture.post("/access/v1/search/subject", follow)
    assert response.status_code == 200, response.text
    assert response.json() == second
    other = {**who, "page": {"limit": 5, "token": first["page"]["next_token"]}}
    assert fixture.post("/access/v1/search/subject", other).status_code == 400
    changed = fixture.post(
        "/access/v1/search/subject",
        {**who, "action": WRITE, "page": {"limit": 1, "token": first["page"]["next_token"]}},
    )
    assert changed.status_code == 400
    for token in ("!!!", "e30", "a" * 5000, 12):
        forged = fixture.post("/access/v1/search/subject", {**who, "page": {"token": token}})
        assert forged.status_code == 400, token


def test_search_empty_results_and_errors(fixture):
    nobody = {"subject": {"type": "user", "id": "nonexistent-user"}, "resource": RECORD_1}
    assert results(fixture, "action", nobody) == []  # 4.6.1
    spaceship = {"subject": {"type": "spaceship"}, "action": READ, "resource": RECORD_1}
    assert results(fixture, "subject", spaceship) == []  # 4.6.2
    unknown_type = {"subject": ALICE, "action": READ, "resource": {"type": "spaceship"}}
    assert results(fixture, "resource", unknown_type) == []
    # 4.6 holds on every search endpoint, for an unknown identifier and an unknown type.
    for kind, body in (
        (
            "subject",
            {"subject": {"type": "user"}, "action": READ, "resource": {**RECORD_1, "id": "x"}},
        ),
        (
            "resource",
            {
                "subject": {**ALICE, "id": "nonexistent-user"},
                "action": READ,
                "resource": {"type": "record"},
            },
        ),
        ("action", {"subject": ALICE, "resource": {"type": "record", "id": "nonexistent"}}),
        ("action", {"subject": {"type": "spaceship", "id": "alice"}, "resource": RECORD_1}),
        ("action", {"subject": ALICE, "resource": {"type": "spaceship", "id": "record-1"}}),
        (
            "resource",
            {
                "subject": {"type": "spaceship", "id": "alice"},
                "action": READ,
                "resource": {"type": "record"},
            },
        ),
        (
            "subject",
            {
                "subject": {"type": "user"},
                "action": READ,
                "resource": {"type": "spaceship", "id": "1"},
            },
        ),
    ):
        assert results(fixture, kind, body) == [], (kind, body)
    for kind, body in (
        ("subject", {"subject": {"type": "user"}, "resource": RECORD_1}),  # 4.7.1
        ("resource", {"action": READ, "resource": {"type": "record"}}),
        ("action", {"subject": ALICE}),
        ("subject", {"subject": {"type": "user"}, "action": READ, "resource": {"type": "record"}}),
        ("resource", {"subject": {"type": "user"}, "action": READ, "resource": {"type": "record"}}),
        ("action", {"subject": {"type": "user"}, "resource": RECORD_1}),  # 4.7.2
    ):
        response = fixture.post(f"/access/v1/search/{kind}", body)
        assert response.status_code == 400, (kind, body, response.text)


# -- Discovery -----------------------------------------------------------------------------


def test_discovery_metadata(database, issuer):
    for live in serve(database, issuer, public_url="https://pdp.example.com"):
        response = live.pep.get(live.base + "/.well-known/authzen-configuration", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {
            "policy_decision_point": "https://pdp.example.com",
            "access_evaluation_endpoint": "https://pdp.example.com/access/v1/evaluation",
            "access_evaluations_endpoint": "https://pdp.example.com/access/v1/evaluations",
            "search_subject_endpoint": "https://pdp.example.com/access/v1/search/subject",
            "search_resource_endpoint": "https://pdp.example.com/access/v1/search/resource",
            "search_action_endpoint": "https://pdp.example.com/access/v1/search/action",
            "access_request_endpoint": "https://pdp.example.com/access/v1/requests",
            "capabilities": ["urn:openid:authzen:capability:access-request"],
        }


def test_discovery_without_a_public_url_names_the_url_asked(fixture):
    """6.5: the identifier is the URL the metadata was asked at, and every endpoint it names
    answers its API there (an evaluation, a batch, each search)."""
    headers = {"X-Request-ID": "discovery-1"}
    response = fixture.pep.get(
        fixture.base + "/.well-known/authzen-configuration", headers=headers, timeout=10
    )
    assert response.headers["X-Request-ID"] == "discovery-1"
    metadata = response.json()
    assert metadata["policy_decision_point"] == fixture.base
    assert metadata["access_evaluation_endpoint"] == fixture.base + EVALUATION
    bodies = {
        "access_evaluation_endpoint": ask(),
        "access_evaluations_endpoint": {"evaluations": [ask(), ask(BOB, WRITE)]},
        "search_subject_endpoint": {
            "subject": {"type": "user"},
            "action": READ,
            "resource": RECORD_1,
        },
        "search_resource_endpoint": {
            "subject": ALICE,
            "action": READ,
            "resource": {"type": "record"},
        },
        "search_action_endpoint": {"subject": ALICE, "resource": RECORD_1},
    }
    profile = {"access_request_endpoint", "capabilities"}  # the Access Request profile's
    assert set(metadata) == {"policy_decision_point", *profile, *bodies}
    for name, body in bodies.items():
        answer = fixture.pep.post(metadata[name], json=body, timeout=10)
        assert answer.status_code == 200, (name, answer.text)
        assert answer.headers["Content-Type"] == "application/json"


# -- what an evaluation records -------------------------------------------------------------


def test_an_allowed_evaluation_records_the_grants_last_use(fixture):
    """The latest use of a grant is written with the agent acting for the person and the
    answer's evaluation_id, and the admin API shows them where it shows grants."""
    assert decision(fixture, ask(context={"agent": "claude-desktop"})) is True
    acting = {**ALICE, "properties": {"act": {"sub": "claude-code"}}}
    latest = fixture.post(EVALUATION, ask(acting, context={"agent": "ignored"})).json()
    assert latest["decision"] is True
    assert decision(fixture, ask(BOB, WRITE)) is False
    fixture.app.extensions["provisioning.api.last_use"].flush()
    with fixture.database.reader() as session:
        used = [
            (g.id, g.user_id, g.last_used_agent, g.last_evaluation_id)
            for g in session.scalars(select(Grant).where(Grant.revoked_at.is_(None)))
            if g.last_used_at is not None
        ]
    evaluation_id = latest["context"]["evaluation_id"]
    assert [(agent, evaluation) for _, _, agent, evaluation in used] == [
        ("claude-code", evaluation_id)
    ]
    grant_id, user_id = used[0][:2]
    grants = fixture.admin.get(fixture.base + "/api/v1/grants?limit=100", timeout=10).json()
    shown = {g["id"]: g for g in grants["items"]}
    assert shown[grant_id]["last_used_agent"] == "claude-code"
    assert shown[grant_id]["last_evaluation_id"] == evaluation_id
    assert sum(1 for g in shown.values() if g["last_evaluation_id"] is not None) == 1
    held = fixture.admin.get(f"{fixture.base}/api/v1/users/{user_id}/access", timeout=10).json()
    [grant] = [g for g in held["grants"] if g["grant_id"] == grant_id]
    assert (grant["last_used_agent"], grant["last_evaluation_id"]) == ("claude-code", evaluation_id)


def test_the_agent_and_evaluation_written_are_the_latest_uses_own(database, origin):
    """A later use without an agent (one through /api/v1/decisions) leaves none recorded: the
    last use's agent and evaluation are that use's, never an earlier one's; within one batch
    the latest use wins."""
    with database.transaction() as session:
        org = Org(session, origin)
        ada = org.user("ada")
        github = org.connector("github", actions=(("search", "read", "always_allow"),))
        eng = org.group("eng")
        org.join(ada, eng)
        create_mapping(session, origin, eng, github, "read")
    with database.reader() as session:
        grant_id = session.scalar(select(Grant.id))
    recorder = LastUseRecorder(database)
    now = utcnow()
    recorder.used(grant_id, now, agent="claude-code", evaluation_id="e-2")
    recorder.used(grant_id, now - dt.timedelta(seconds=1), agent="other", evaluation_id="e-1")
    recorder.flush()
    with database.reader() as session:
        grant = session.get(Grant, grant_id)
        assert (grant.last_used_agent, grant.last_evaluation_id) == ("claude-code", "e-2")
    recorder.used(grant_id, now + dt.timedelta(hours=2))
    recorder.flush()
    with database.reader() as session:
        grant = session.get(Grant, grant_id)
        assert (grant.last_used_agent, grant.last_evaluation_id) == (None, None)


# -- the demo, as a gateway that has never seen this project ----------------------------------


def test_the_demo_answers_a_coaz_mcp_gateway(live, origin):
    from provisioning.demo import seed

    with live.database.transaction() as session:
        seed(session, origin)
    github = "https://mcp.example.com/github"

    def coaz(who, method, resource):
        body = {
            "subject": {"type": "identity", "id": who},
            "context": {"agent": "claude-code"},
            "action": {"name": method},
            "resource": resource,
        }
        return live.post(EVALUATION, body).json()

    tool = {"type": "tool", "id": "search_code", "properties": {"mcp_server": github}}
    assert coaz("ada.lovelace@example.com", "tools/call", tool)["decision"] is True
    server = {"type": "mcp_server", "id": github}
    assert coaz("ada.lovelace@example.com", "tools/list", server)["decision"] is True
    leaver = coaz("leaver.lee@example.com", "tools/list", server)
    assert leaver["decision"] is False and leaver["context"]["reason"] == "user_inactive"
    listing = live.post(
        "/access/v1/search/resource",
        {
            "subject": {"type": "identity", "id": "ada.lovelace@example.com"},
            "action": {"name": "tools/call"},
            "resource": {"type": "tool", "properties": {"mcp_server": github}},
        },
    ).json()
    assert {
        "type": "tool",
        "id": "search_code",
        "properties": {"connector": "github", "mcp_server": github},
    } in listing["results"]
