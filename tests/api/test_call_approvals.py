"""Call-level approval over HTTP (the draft AuthZEN Access Request & Approval profile):
a requestable denial, the task, the approver's decision, re-evaluation with the approval."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from provisioning.audit.models import AuditEvent
from provisioning.delivery.models import OutboxMessage
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.requests.models import AccessRequest
from tests.delivery.conftest import chat_target
from tests.org import Org

CHECK, ASK, WRITE = ["decisions:check"], ["requests:write"], ["admin:write"]
EVALUATION, REQUESTS = "/access/v1/evaluation", "/access/v1/requests"
URN = "urn:openid:authzen:access-request:error:"
ARGS = {"repo": "acme/api", "number": 42}


@pytest.fixture
def org(api, database, origin) -> dict:
    """Ada (Boss's report) holds GitHub read-write; merging needs Olga's (the owner's) yes."""
    with database.transaction() as session:
        chat_target(session, origin)
        o = Org(session, origin)
        boss = o.user("boss@example.com")
        o.user("olga@example.com")
        ada = o.user("ada@example.com", manager_id=str(boss.id))
        eve = o.user("eve@example.com", manager_id=str(boss.id))
        github = o.connector(
            "github",
            owner="olga@example.com",
            actions=(
                ("merge_pull_request", "write", "needs_approval"),
                ("close_issue", "write", "needs_approval"),
            ),
        )
        eng = o.group("eng")
        o.join(ada, eng)
        o.join(eve, eng)
        create_mapping(session, origin, eng, github, "read_write")
    policy = {"approvers": ["owner"], "max_days": 14, "decide_within_days": 5}
    assert (
        api.request("PUT", "/api/v1/request-policies/github", json=policy, scopes=WRITE).status_code
        == 200
    )
    patched = api.patch(
        "/api/v1/connectors/github/actions/merge_pull_request",
        json={"requires_approver": True},
        scopes=WRITE,
    )
    assert patched.status_code == 200 and patched.json["requires_approver"] is True
    return {"ada": str(ada.id), "eve": str(eve.id)}


def call(who="ada@example.com", tool="merge_pull_request", arguments=ARGS, **context) -> dict:
    ctx = {"arguments": arguments, **context} if arguments is not None else dict(context)
    return {
        "subject": {"type": "user", "id": who},
        "resource": {"type": "tool", "id": tool, "properties": {"connector": "github"}},
        "action": {"name": "tools/call"},
        "context": ctx,
    }


def evaluate(api, body) -> dict:
    answer = api.post(EVALUATION, json=body, scopes=CHECK)
    assert answer.status_code == 200, answer.json
    return answer.json


def submission(body: dict, denial: dict, **extra) -> dict:
    access = denial["context"]["access_request"]
    return {
        **body,
        "denial": {
            "evaluation_id": denial["context"]["evaluation_id"],
            "expires_at": access["expires_at"],
            "binding_token": access["binding_token"],
            "reason": denial["context"]["reason"],
        },
        **extra,
    }


def submit(api, body, key="k-1"):
    headers = {"Idempotency-Key": key} if key else {}
    return api.post(REQUESTS, json=body, scopes=CHECK, headers=headers)


def assert_profile_problem(response, status: int, code: str) -> None:
    assert response.status_code == status, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["type"] == URN + code


def approved(api, org) -> tuple[dict, dict]:
    """Ada's merge asked for, submitted and approved by Olga: (task answer, approval)."""
    denial = evaluate(api, call())
    opened = submit(api, submission(call(), denial))
    assert opened.status_code == 201, opened.json
    task = opened.json["task"]
    request_id = _request_id(api, task["id"])
    decided = api.post(
        f"/api/v1/requests/{request_id}/decision",
        json={"decision": "approve", "comment": "ok"},
        scopes=ASK,
        sub="olga@example.com",
    )
    assert decided.status_code == 200, decided.json
    status = api.get(task["status_endpoint"].split("localhost")[-1], scopes=CHECK)
    assert status.json["task"]["status"] == "approved"
    return status.json, status.json["result"]["approval"]


def _request_id(api, task_id: str) -> int:
    with api.database.reader() as session:
        return session.scalar(select(AccessRequest.id).where(AccessRequest.task_id == task_id))


def test_denied_with_request_then_approved_then_allowed_for_that_call_only(api, database, org):
    denial = evaluate(api, call())
    assert denial["decision"] is False
    context = denial["context"]
    assert context["reason"] == "approval_required" and context["outcome"] == "needs_approval"
    assert "approval" not in context  # not the caller's own confirmation
    access = context["access_request"]
    assert access["endpoint"].endswith(REQUESTS) and access["template"] == "call_approval"
    assert set(access) >= {"expires_at", "binding_token"} and context["evaluated_at"]
    # Another needs_approval action without an approver keeps the caller's confirmation.
    plain = evaluate(api, call(tool="close_issue"))["context"]
    assert plain["reason"] == "needs_approval" and plain["approval"]["type"] == "confirmation"
    assert "access_request" not in plain

    opened = submit(api, submission(call(), denial))
    assert opened.status_code == 201, opened.json
    task = opened.json["task"]
    assert task["status"] == "pending" and task["id"].startswith("arq_")
    assert opened.headers["Location"] == task["status_endpoint"]
    assert task["links"]["cancel"] == task["status_endpoint"] + "/cancel"
    with database.reader() as session:
        row = session.scalar(select(AccessRequest).where(AccessRequest.task_id == task["id"]))
        assert (row.kind, row.user_id.hex, row.approvers) == (
            "call",
            org["ada"].replace("-", ""),
            ["owner"],
        )
        kinds = list(session.scalars(select(OutboxMessage.event_type)))
        assert kinds.count("request.created") == 1

    # Ada cannot approve her own call; Olga (the owner) can.
    own = api.post(f"/api/v1/requests/{row.id}/decision", json={"decision": "approve"}, scopes=ASK)
    assert own.status_code == 403
    yes = api.post(
        f"/api/v1/requests/{row.id}/decision",
        json={"decision": "approve"},
        scopes=ASK,
        sub="olga@example.com",
    )
    assert yes.status_code == 200 and yes.json["state"] == "approved"
    status = api.get(f"{REQUESTS}/{task['id']}", scopes=CHECK).json
    assert status["task"]["status"] == "approved" and "links" not in status["task"]
    result = status["result"]
    assert result["mode"] == "reevaluate"
    approval = result["approval"]
    assert approval["id"].startswith("apr_") and approval["approved_until"]
    with database.reader() as session:  # an approved call grants nothing
        assert (
            session.scalar(select(AccessRequest.expires_at).where(AccessRequest.id == row.id))
            is None
        )
        assert session.query(Grant).filter(Grant.revoked_at.is_(None)).count() == 2

    allowed = evaluate(api, call(approval=approval))
    assert allowed["decision"] is True, allowed
    assert allowed["context"]["approval"] == {
        "id": approval["id"],
        "approved_until": approval["approved_until"],
    }
    # Other arguments, another person, another tool: not covered.
    other = evaluate(api, call(arguments={**ARGS, "number": 43}, approval=approval))
    assert other["decision"] is False and other["context"]["reason"] == "out_of_scope"
    assert other["context"]["next_action"] == "request" and other["context"]["access_request"]
    eve = evaluate(api, call(who="eve@example.com", approval=approval))
    assert eve["decision"] is False and eve["context"]["reason"] == "out_of_scope"
    forged = evaluate(api, call(approval={**approval, "id": "apr_forged"}))
    assert forged["decision"] is False
    assert forged["context"]["reason"] == "approval_unverifiable"
    assert forged["context"]["next_action"] == "none" and "access_request" not in forged["context"]
    # After approved_until: denied again, with a fresh requestable denial.
    with database.transaction() as session:
        session.execute(
            update(AccessRequest)
            .where(AccessRequest.id == row.id)
            .values(approved_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    late = evaluate(api, call(approval=approval))
    assert late["decision"] is False and late["context"]["reason"] == "approval_expired"
    assert late["context"]["access_request"]["binding_token"]
    with database.reader() as session:
        actions = [
            e.action
            for e in session.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.subject_type == "access_request",
                    AuditEvent.subject_id == str(row.id),
                )
                .order_by(AuditEvent.id)
            )
        ]
    assert actions == ["request.created", "request.decided"]


def test_a_policy_change_voids_the_approval(api, org):
    _, approval = approved(api, org)
    assert evaluate(api, call(approval=approval))["decision"] is True
    policy = {"approvers": ["owner", "manager"], "max_days": 14, "decide_within_days": 5}
    assert (
        api.request("PUT", "/api/v1/request-policies/github", json=policy, scopes=WRITE).status_code
        == 200
    )
    again = evaluate(api, call(approval=approval))
    assert again["decision"] is False and again["context"]["reason"] == "approval_expired"


def test_idempotency_key_same_body_same_task_other_body_conflict(api, database, org):
    denial = evaluate(api, call())
    body = submission(call(), denial)
    first = submit(api, body, key="retry-1")
    second = submit(api, body, key="retry-1")
    assert first.status_code == second.status_code == 201
    assert first.json["task"]["id"] == second.json["task"]["id"]
    changed = submit(
        api,
        {**body, "requested_access": {"requested_until": "2030-01-01T00:00:00Z"}},
        key="retry-1",
    )
    assert_profile_problem(changed, 409, "duplicate_request")
    # The same denial under a new key is a replay of its binding: refused.
    replay = submit(api, body, key="retry-2")
    assert_profile_problem(replay, 400, "invalid_denial_binding")
    with database.reader() as session:
        assert session.query(AccessRequest).count() == 1


def test_bindings_that_do_not_cover_the_submission_are_refused(api, database, org):
    denial = evaluate(api, call())
    for body, status, code in [
        (submission(call(arguments={"repo": "acme/other"}), denial), 400, "invalid_denial_binding"),
        (submission(call(who="eve@example.com"), denial), 400, "invalid_denial_binding"),
        (submission(call(tool="close_issue"), denial), 400, "invalid_denial_binding"),
        (
            {**submission(call(), denial), "denial": {"expires_at": "x", "binding_token": "a.b.c"}},
            400,
            "invalid_denial_binding",
        ),
        ({**call()}, 400, "invalid_denial_binding"),
    ]:
        assert_profile_problem(submit(api, body, key=None), status, code)
    stale = submission(call(), denial)
    stale["denial"]["expires_at"] = "2020-01-01T00:00:00Z"
    assert_profile_problem(submit(api, stale, key=None), 400, "invalid_denial_binding")
    with database.reader() as session:
        assert session.query(AccessRequest).count() == 0


def test_status_cancel_and_unknown_tasks(api, database, org):
    denial = evaluate(api, call())
    task = submit(api, submission(call(), denial)).json["task"]
    cancelled = api.post(f"{REQUESTS}/{task['id']}/cancel", json={"reason": "gone"}, scopes=CHECK)
    assert cancelled.status_code == 200 and cancelled.json["task"]["status"] == "cancelled"
    again = api.post(f"{REQUESTS}/{task['id']}/cancel", scopes=CHECK)
    assert_profile_problem(again, 409, "invalid_task_state")
    assert_profile_problem(api.get(f"{REQUESTS}/arq_nope", scopes=CHECK), 404, "unknown_task")
    assert api.get(f"{REQUESTS}/{task['id']}", scopes=ASK).status_code == 403
    with database.reader() as session:
        kinds = [e.action for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert "request.cancelled" in kinds


@pytest.mark.parametrize(
    "plan",
    [
        ["one"] * 6,  # one key: every retry is answered with the one task
        ["k1", "k2", "k3", "k4", "k5", "k6"],  # one denial under six keys: one task per denial
        ["one", "one*", "one", "two", "two*", "one*"],  # *: another body under that key
    ],
    ids=["one-key", "six-keys", "mixed"],
)
def test_concurrent_submissions_of_one_denial_make_one_task_and_no_server_error(
    api, database, org, plan
):
    """Racing submissions of one binding token (threads, each its own client): exactly one
    task; the others are its replay, ``duplicate_request`` (the key with another body) or
    ``invalid_denial_binding`` (the denial under another key), never a 5xx."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    denial = evaluate(api, call())
    body = submission(call(), denial)
    other = {**body, "requested_access": {"requested_until": "2030-01-01T00:00:00Z"}}
    barrier = threading.Barrier(len(plan))

    def race(entry: str):
        client = api.app.test_client()
        headers = api.headers(CHECK, **{"Idempotency-Key": entry.rstrip("*")})
        barrier.wait()
        return client.post(REQUESTS, json=other if entry.endswith("*") else body, headers=headers)

    with ThreadPoolExecutor(len(plan)) as pool:
        answers = list(pool.map(race, plan))
    assert all(a.status_code < 500 for a in answers), [a.json for a in answers]
    with database.reader() as session:
        (task_id,) = session.scalars(select(AccessRequest.task_id)).all()
        created = session.scalars(
            select(AuditEvent.id).where(AuditEvent.action == "request.created")
        ).all()
    assert len(created) == 1
    won = {entry for entry, a in zip(plan, answers, strict=True) if a.status_code == 201}
    assert len(won) == 1, [a.json for a in answers]  # one key and one body
    (winner,) = won
    for entry, answer in zip(plan, answers, strict=True):
        if entry == winner:
            assert answer.status_code == 201 and answer.json["task"]["id"] == task_id
        elif entry.rstrip("*") == winner.rstrip("*"):
            assert_profile_problem(answer, 409, "duplicate_request")
        else:
            assert_profile_problem(answer, 400, "invalid_denial_binding")


def test_the_approval_carries_a_signed_state_the_pdp_verifies(api, database, org):
    """``approval.state``: a JWS for this PDP naming the approval, the task and the call;
    re-evaluation verifies it and still reads the approval's record."""
    import base64
    import json

    status, approval = approved(api, org)
    state = approval["state"]
    header, claims = (
        json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        for part in state.split(".")[:2]
    )
    metadata = api.get("/.well-known/authzen-configuration", scopes=CHECK).json
    assert header["alg"] == "HS256" and header["kid"] and header["typ"] == "approval-state+jwt"
    assert claims["aud"] == metadata["policy_decision_point"] and claims["iss"]
    with database.reader() as session:
        row = session.scalar(
            select(AccessRequest).where(AccessRequest.approval_id == approval["id"])
        )
    assert claims["approval_id"] == approval["id"] and claims["task_id"] == status["task"]["id"]
    assert claims["sub"] == org["ada"] and claims["action"] == "merge_pull_request"
    assert claims["arguments_digest"] == row.call["arguments_digest"]
    assert claims["policy_version"] == row.call["policy_version"]
    until = dt.datetime.fromisoformat(approval["approved_until"].replace("Z", "+00:00"))
    assert claims["exp"] == int(until.timestamp())
    # The same state on every read of the task.
    again = api.get(f"{REQUESTS}/{status['task']['id']}", scopes=CHECK).json
    assert again["result"]["approval"]["state"] == state

    assert evaluate(api, call(approval=approval))["decision"] is True
    lookup = {k: v for k, v in approval.items() if k != "state"}
    assert evaluate(api, call(approval=lookup))["decision"] is True  # without state: the lookup
    for forged in (
        {**approval, "state": state[:-3] + ("AAA" if not state.endswith("AAA") else "BBB")},
        {**approval, "state": None},
        {**approval, "state": "a.b.c"},
    ):
        answer = evaluate(api, call(approval=forged))
        assert answer["decision"] is False, forged
        assert answer["context"]["reason"] == "approval_unverifiable"
    # Under another PDP identifier (the audience), the same state is not ours to accept.
    from tests.api.conftest import Api, make_app

    elsewhere = Api(
        make_app(database, api.issuer, public_url="https://pdp.elsewhere.example"),
        database,
        api.issuer,
    )
    answer = evaluate(elsewhere, call(approval=approval))
    assert answer["decision"] is False
    assert answer["context"]["reason"] == "approval_unverifiable"
    assert evaluate(elsewhere, call(approval=lookup))["decision"] is True
    # The record still decides: a state does not outlive its approval's withdrawal.
    with database.transaction() as session:
        session.execute(
            update(AccessRequest).where(AccessRequest.id == row.id).values(state="cancelled")
        )
    withdrawn = evaluate(api, call(approval=approval))
    assert withdrawn["decision"] is False
    assert withdrawn["context"]["reason"] == "approval_unverifiable"
