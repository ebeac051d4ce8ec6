"""Access requests over /api/v1: ask, two-stage approval, cancel, refusals as problem+json."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from provisioning.audit.models import AuditEvent
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
from tests.org import Org
from tests.rows import rows

ASK, READ, WRITE = ["requests:write"], ["admin:read"], ["admin:write"]
BASE = "/api/v1/requests"


def assert_problem(response, status: int, kind: str) -> None:
    assert response.status_code == status, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["type"] == f"urn:provisioning:problem:{kind}"


@pytest.fixture
def org(api, database, origin) -> dict:
    """Boss manages Ada; Olga owns GitHub, which needs the manager then the owner."""
    with database.transaction() as session:
        o = Org(session, origin)
        boss = o.user("boss@example.com")
        o.user("olga@example.com")
        ada = o.user("ada@example.com", manager_id=str(boss.id))
        o.connector(
            "github",
            owner="olga@example.com",
            actions=(("list_repos", "read", "always_allow"),),
        )
        o.connector("wiki", owner="olga@example.com", enabled=False)
        ids = {"ada": str(ada.id), "boss": str(boss.id)}
    policy = {"approvers": ["manager", "owner"], "max_days": 14, "decide_within_days": 5}
    put = api.request("PUT", "/api/v1/request-policies/github", json=policy, scopes=WRITE)
    assert put.status_code == 200, put.json
    wiki = api.request("PUT", "/api/v1/request-policies/wiki", json=policy, scopes=WRITE)
    assert wiki.status_code == 200, wiki.json
    assert put.json["approvers"] == ["manager", "owner"]
    return ids


def granted(database) -> set[tuple[str, str]]:
    from provisioning.connectors.models import Connector

    with database.reader() as session:
        return set(
            session.execute(
                select(User.user_name, Connector.slug)
                .join(Grant, Grant.user_id == User.id)
                .join(Connector, Connector.id == Grant.connector_id)
                .where(Grant.revoked_at.is_(None))
            ).all()
        )


ASKED = {
    "connector": "github",
    "access_level": "read",
    "justification": "incident 4711",
    "duration_days": 7,
}


def test_a_request_from_asking_through_two_approvals_to_the_grant(api, database, org):
    asked = api.post(BASE, json=ASKED, scopes=ASK, sub="ada@example.com")
    assert asked.status_code == 201, asked.json
    request = asked.json
    assert asked.headers["Location"] == request["url"]
    assert request["state"] == "pending" and request["requested_by"] == "ada@example.com"
    assert request["user_id"] == org["ada"] and request["approvers"] == ["manager", "owner"]
    url = request["url"]

    def decide(sub, decision="approve"):
        body = {"decision": decision, "comment": "ok"}
        return api.post(f"{url}/decision", json=body, scopes=ASK, sub=sub)

    # Ada cannot approve her own; Olga's stage is not yet; a person outside is 403 too.
    assert_problem(decide("ada@example.com"), 403, "not-allowed")
    assert_problem(decide("olga@example.com"), 403, "not-allowed")
    assert_problem(decide("nobody@example.com"), 403, "no-person")
    first = decide("boss@example.com")
    assert first.status_code == 200 and first.json["stage"] == 1
    assert granted(database) == set()
    second = decide("olga@example.com")
    assert second.status_code == 200, second.json
    assert second.json["state"] == "approved" and second.json["expires_at"]
    assert [(s["role"], s["approver"]) for s in second.json["steps"]] == [
        ("manager", "boss@example.com"),
        ("owner", "olga@example.com"),
    ]
    assert granted(database) == {("ada@example.com", "github")}
    # Closed: no more decisions, no cancel.
    assert_problem(decide("olga@example.com", "deny"), 409, "request-conflict")
    cancelled = api.post(f"{url}/cancel", json={}, scopes=ASK, sub="ada@example.com")
    assert_problem(cancelled, 409, "request-conflict")
    listed = api.get(f"{BASE}?state=approved", scopes=READ).json["items"]
    assert [r["id"] for r in listed] == [request["id"]]
    assert api.get(url, scopes=READ).json == second.json
    with database.reader() as session:
        events = session.scalars(
            select(AuditEvent.actor).where(AuditEvent.action.like("request.%")).order_by("id")
        ).all()
        assert events == ["ada@example.com", "boss@example.com", "olga@example.com"]


def test_cancel_and_deny_grant_nothing(api, database, org):
    first = api.post(BASE, json=ASKED, scopes=ASK, sub="ada@example.com").json
    assert_problem(
        api.post(f"{first['url']}/cancel", json={}, scopes=ASK, sub="boss@example.com"),
        403,
        "not-allowed",
    )
    cancelled = api.post(f"{first['url']}/cancel", json={}, scopes=ASK, sub="ada@example.com")
    assert cancelled.json["state"] == "cancelled"
    second = api.post(BASE, json=ASKED, scopes=ASK, sub="ada@example.com").json
    denied = api.post(
        f"{second['url']}/decision",
        json={"decision": "deny", "comment": "no"},
        scopes=ASK,
        sub="boss@example.com",
    )
    assert denied.json["state"] == "denied"
    assert granted(database) == set()


def test_a_static_token_bound_to_a_person_asks_as_that_person(api, database, org):
    from provisioning.audit.log import Origin, Source
    from provisioning.tokens import credentials

    with database.transaction() as session:
        secret = credentials.create(
            session, "ada-cli", ASK, Origin("test", Source.CLI), person=uuid.UUID(org["ada"])
        )
        unbound = credentials.create(session, "robot", ASK, Origin("test", Source.CLI))
    asked = api.client.post(BASE, json=ASKED, headers={"Authorization": f"Bearer {secret}"})
    assert asked.status_code == 201, asked.json
    assert asked.json["user_id"] == org["ada"]
    before = rows(database)
    refused = api.client.post(BASE, json=ASKED, headers={"Authorization": f"Bearer {unbound}"})
    assert_problem(refused, 403, "no-person")
    assert rows(database) == before


@pytest.mark.parametrize(
    ("body", "sub", "status", "kind"),
    [
        ({**ASKED, "duration_days": 15}, "ada@example.com", 422, "invalid-request"),
        ({**ASKED, "duration_days": 0}, "ada@example.com", 422, "invalid-request"),
        ({**ASKED, "duration_days": 10**12}, "ada@example.com", 422, "invalid-request"),
        ({**ASKED, "connector": "wiki"}, "ada@example.com", 422, "invalid-request"),
        ({**ASKED, "connector": "nope"}, "ada@example.com", 422, "invalid-request"),
        ({**ASKED, "access_level": "root"}, "ada@example.com", 422, "invalid-request"),
        ({**ASKED, "actions": ["rm_rf"]}, "ada@example.com", 422, "invalid-request"),
        ({**ASKED, "justification": ""}, "ada@example.com", 422, "invalid-request"),
        ({**ASKED, "justification": "a\x00b"}, "ada@example.com", 422, "invalid-request"),
        ({**ASKED, "extra": 1}, "ada@example.com", 422, "invalid-request"),
        ({**ASKED, "user_id": "not-a-uuid"}, "ada@example.com", 422, "invalid-request"),
        (
            {**ASKED, "user_id": "00000000-0000-0000-0000-000000000001"},
            "ada@example.com",
            422,
            "invalid-request",
        ),
        # Olga is not Ada's manager; the manager asking would approve their own request.
        ({**ASKED, "user_id": "ADA"}, "olga@example.com", 403, "not-allowed"),
        ({**ASKED, "user_id": "ADA"}, "boss@example.com", 409, "request-conflict"),
        (ASKED, "stranger@example.com", 403, "no-person"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(api, database, org, body, sub, status, kind):
    if body.get("user_id") == "ADA":
        body = {**body, "user_id": org["ada"]}
    before = rows(database)
    assert_problem(api.post(BASE, json=body, scopes=ASK, sub=sub), status, kind)
    assert rows(database) == before


def test_requests_need_their_scope_and_known_ids(api, database, org):
    assert api.post(BASE, json=ASKED, scopes=READ).status_code == 403
    assert api.get(BASE, scopes=ASK).status_code == 403
    assert_problem(api.get(f"{BASE}/99", scopes=READ), 404, "not-found")
    decision = {"decision": "approve"}
    assert_problem(
        api.post(f"{BASE}/99/decision", json=decision, scopes=ASK, sub="boss@example.com"),
        404,
        "not-found",
    )
    assert_problem(
        api.post(f"{BASE}/2147483648/decision", json=decision, scopes=ASK, sub="boss@example.com"),
        422,
        "invalid-request",
    )
    bad_policy = {"approvers": ["owner", "owner"], "max_days": 3}
    assert_problem(
        api.request("PUT", "/api/v1/request-policies/github", json=bad_policy, scopes=WRITE),
        422,
        "invalid-request",
    )
    assert_problem(
        api.request(
            "PUT",
            "/api/v1/request-policies/nope",
            json={"approvers": ["owner"], "max_days": 3},
            scopes=WRITE,
        ),
        404,
        "not-found",
    )
    policies = api.get("/api/v1/request-policies", scopes=READ).json["items"]
    assert [p["connector"] for p in policies] == ["github", "wiki"]
    assert api.delete("/api/v1/request-policies/github", scopes=WRITE).status_code == 204
    assert_problem(api.post(BASE, json=ASKED, scopes=ASK), 409, "request-conflict")


def test_a_request_that_would_break_a_separation_rule_is_refused_naming_it(api, database, org):
    from provisioning.entitlements.mappings import create_exception
    from tests.org import later

    with database.transaction() as session:
        from provisioning.audit.log import Origin, Source

        o = Org(session, Origin("test", Source.ADMIN))
        payroll = o.connector("payroll")
        ada = session.get(User, uuid.UUID(org["ada"]))
        create_exception(
            session,
            Origin("test", Source.ADMIN),
            ada,
            payroll,
            "read",
            justification="hr",
            expires_at=later(30),
        )
    rule = {
        "name": "code and pay",
        "these": ["github"],
        "those": ["payroll"],
        "owner": "risk@example.com",
        "reason": "who ships code does not run payroll",
    }
    made = api.post("/api/v1/separation-rules", json=rule, scopes=WRITE)
    assert made.status_code == 201, made.json
    assert made.json["these"] == ["github"] and made.json["those"] == ["payroll"]
    assert_problem(
        api.post("/api/v1/separation-rules", json=rule, scopes=WRITE), 422, "invalid-request"
    )
    bad = {**rule, "name": "other", "those": ["nope"]}
    assert_problem(
        api.post("/api/v1/separation-rules", json=bad, scopes=WRITE), 422, "invalid-request"
    )
    before = rows(database)
    refused = api.post(BASE, json=ASKED, scopes=ASK, sub="ada@example.com")
    assert_problem(refused, 409, "separation-of-duties")
    assert "code and pay" in refused.json["detail"]
    assert rows(database) == before
    # An exemption (justified, approved by the admin, expiring) lets Ada ask.
    exemption = {
        "user_id": org["ada"],
        "justification": "payroll migration",
        "expires_at": later(3).isoformat(),
    }
    url = f"/api/v1/separation-rules/{made.json['id']}/exemptions"
    assert api.post(url, json=exemption, scopes=WRITE).status_code == 201
    assert api.post(BASE, json=ASKED, scopes=ASK, sub="ada@example.com").status_code == 201
    assert_problem(
        api.post("/api/v1/separation-rules/999/exemptions", json=exemption, scopes=WRITE),
        404,
        "not-found",
    )
    assert [r["name"] for r in api.get("/api/v1/separation-rules", scopes=READ).json["items"]] == [
        "code and pay"
    ]


def test_idempotency_key_same_body_same_request_other_body_409(api, database, org):
    headers = {"Idempotency-Key": "ask-1"}
    first = api.post(BASE, json=ASKED, scopes=ASK, headers=headers)
    again = api.post(BASE, json=dict(reversed(list(ASKED.items()))), scopes=ASK, headers=headers)
    assert first.status_code == again.status_code == 201, again.json
    assert first.json["id"] == again.json["id"] and again.headers["Location"] == first.json["url"]
    other = api.post(BASE, json={**ASKED, "duration_days": 3}, scopes=ASK, headers=headers)
    assert_problem(other, 409, "duplicate-request")
    too_long = api.post(BASE, json=ASKED, scopes=ASK, headers={"Idempotency-Key": "k" * 256})
    assert too_long.status_code == 422
    with database.reader() as session:
        from provisioning.requests.models import AccessRequest

        assert session.query(AccessRequest).count() == 1
        replays = session.scalars(
            select(AuditEvent.action).where(AuditEvent.action == "request.replayed")
        ).all()
        assert replays == ["request.replayed"]


@pytest.mark.parametrize("key", ["race-1", None])
def test_concurrent_submissions_make_one_request_and_no_server_error(api, database, org, key):
    """The defect: two submissions racing past the check (the same new Idempotency-Key, or
    the same person and connector) met the unique index at commit and answered 500."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from provisioning.requests.models import AccessRequest

    headers = {**api.headers(ASK), **({"Idempotency-Key": key} if key else {})}
    racers = 6
    barrier = threading.Barrier(racers)

    def submit(_: int):
        client = api.app.test_client()
        barrier.wait()
        return client.post(BASE, json=ASKED, headers=headers)

    with ThreadPoolExecutor(racers) as pool:
        answers = list(pool.map(submit, range(racers)))
    statuses = sorted(answer.status_code for answer in answers)
    with database.reader() as session:
        made = session.scalars(select(AccessRequest.id)).all()
    assert len(made) == 1
    if key:  # every retry is answered with the one request
        assert statuses == [201] * racers
        assert {answer.json["id"] for answer in answers} == set(made)
    else:  # one is made; the others are told a request is pending
        assert statuses == [201] + [409] * (racers - 1), [a.json for a in answers]


def test_a_rule_over_actions_refuses_only_who_would_hold_both(api, database, org):
    from provisioning.audit.log import Origin, Source
    from provisioning.entitlements.mappings import create_exception
    from tests.org import later

    admin = Origin("test", Source.ADMIN)
    with database.transaction() as session:
        payroll = Org(session, admin).connector(
            "payroll",
            actions=(
                ("view_payslips", "read", "always_allow"),
                ("run_payroll", "write", "always_allow"),
            ),
        )
        ada = session.get(User, uuid.UUID(org["ada"]))
        boss = session.get(User, uuid.UUID(org["boss"]))
        # Ada views payslips only (an action subset); Boss holds every payroll action.
        for user, actions in ((ada, ["view_payslips"]), (boss, None)):
            create_exception(
                session,
                admin,
                user,
                payroll,
                "read_write",
                justification="hr",
                expires_at=later(30),
                actions=actions,
            )
    rule = {
        "name": "repos and pay runs",
        "these": ["github:list_repos"],
        "those": ["payroll:run_payroll"],
        "owner": "risk@example.com",
        "reason": "who reads the code does not run payroll",
    }
    before = rows(database)
    for these, those in (
        (["github:nope"], ["payroll"]),
        (["github:"], ["payroll"]),
        ([":list_repos"], ["payroll"]),
        (["nope:list_repos"], ["payroll"]),
        (["github:list_repos:x"], ["payroll"]),
        (["github:list_repos\x00"], ["payroll"]),
        (["github"], ["github:list_repos"]),
        (["payroll:run_payroll"], ["payroll:run_payroll"]),
    ):
        bad = {**rule, "these": these, "those": those}
        assert_problem(
            api.post("/api/v1/separation-rules", json=bad, scopes=WRITE), 422, "invalid-request"
        )
    assert rows(database) == before
    made = api.post("/api/v1/separation-rules", json=rule, scopes=WRITE)
    assert made.status_code == 201, made.json
    assert made.json["these"] == ["github:list_repos"]
    assert made.json["those"] == ["payroll:run_payroll"]
    # The scan finds nobody: nobody holds both actions yet.
    with database.transaction() as session:
        from provisioning.entitlements import separation

        assert list(separation.violators(session)) == []
    assert api.post(BASE, json=ASKED, scopes=ASK, sub="ada@example.com").status_code == 201
    refused = api.post(BASE, json=ASKED, scopes=ASK, sub="boss@example.com")
    assert_problem(refused, 409, "separation-of-duties")
    assert "repos and pay runs" in refused.json["detail"]
