"""Bundled call-approval submissions over HTTP (``items``, the draft AuthZEN Access Request
& Approval profile): one task for several calls, decided as one, each item approved and
re-evaluated on its own."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.entitlements import approvals
from provisioning.requests.calls import MAX_ITEMS
from provisioning.requests.models import AccessRequest
from tests.api.test_call_approvals import (  # noqa: F401 (org: the fixture)
    ARGS,
    ASK,
    CHECK,
    REQUESTS,
    assert_profile_problem,
    call,
    evaluate,
    org,
    submit,
)

pytestmark = pytest.mark.usefixtures("org")
NUMBERS = (1, 2, 3)


def denial_of(answer: dict) -> dict:
    access = answer["context"]["access_request"]
    return {"expires_at": access["expires_at"], "binding_token": access["binding_token"]}


def item(number: int, denial: dict) -> dict:
    """One merge (pull request ``number``) as a bundle item, with its own denial."""
    one = call(arguments={**ARGS, "number": number})
    return {
        "resource": one["resource"],
        "action": one["action"],
        "context": one["context"],
        "denial": denial,
    }


def bundle(items: list[dict], who="ada@example.com", **extra) -> dict:
    return {
        "subject": {"type": "user", "id": who},
        "items": items,
        "context": {"business_justification": "release day"},
        **extra,
    }


def denials(api, numbers=NUMBERS, who="ada@example.com") -> list[dict]:
    answers = [evaluate(api, call(who=who, arguments={**ARGS, "number": n})) for n in numbers]
    assert all(a["decision"] is False for a in answers)
    return [denial_of(a) for a in answers]


def merge(number: int, approval: dict | None = None) -> dict:
    extra = {"approval": approval} if approval is not None else {}
    return call(arguments={**ARGS, "number": number}, **extra)


def decide(api, request_id: int, decision: str):
    """Olga, the owner, decides the bundle's request."""
    return api.post(
        f"/api/v1/requests/{request_id}/decision",
        json={"decision": decision},
        scopes=ASK,
        sub="olga@example.com",
    )


def count(database) -> tuple[int, int]:
    with database.reader() as session:
        return (
            session.scalar(select(func.count()).select_from(AccessRequest)),
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "request.created")
            ),
        )


def test_a_bundle_of_three_is_one_task_decided_once_and_each_item_reevaluated_alone(api, database):
    body = bundle([item(n, d) for n, d in zip(NUMBERS, denials(api), strict=True)])
    opened = submit(api, body, key="bundle-1")
    assert opened.status_code == 201, opened.json
    task = opened.json["task"]
    assert task["status"] == "pending" and task["links"]["cancel"]
    assert [i["status"] for i in task["items"]] == ["pending"] * 3
    assert all("result" not in i for i in task["items"])
    assert task["items"][0]["resource"] == body["items"][0]["resource"]
    assert count(database) == (1, 1)  # one task, one request for the approver
    with database.reader() as session:
        row = session.scalar(select(AccessRequest).where(AccessRequest.task_id == task["id"]))
        assert row.actions == ["merge_pull_request"] and len(row.call["items"]) == 3
    read = api.get(f"/api/v1/requests/{row.id}", scopes=["admin:read"])
    assert read.status_code == 200, read.json
    assert len(read.json["call"]["items"]) == 3

    yes = decide(api, row.id, "approve")
    assert yes.status_code == 200, yes.json
    status = api.get(f"{REQUESTS}/{task['id']}", scopes=CHECK).json
    assert status["task"]["status"] == "approved" and "result" not in status
    results = [i["result"] for i in status["task"]["items"]]
    assert [i["status"] for i in status["task"]["items"]] == ["approved"] * 3
    assert all(r["mode"] == "reevaluate" for r in results)
    grants = [r["approval"] for r in results]
    assert len({g["id"] for g in grants}) == 3 and all(g["state"] for g in grants)

    for n, grant in zip(NUMBERS, grants, strict=True):
        allowed = evaluate(api, merge(n, grant))
        assert allowed["decision"] is True, allowed
        lookup = {k: v for k, v in grant.items() if k != "state"}
        assert evaluate(api, merge(n, lookup))["decision"] is True
        for other in NUMBERS:  # a swap of approvals between items: never allowed
            if other != n:
                swapped = evaluate(api, merge(other, grant))
                assert swapped["decision"] is False
                assert swapped["context"]["reason"] == "out_of_scope"
    # An item's state under another item's id, or the task's own approval id: refused.
    mixed = {**grants[0], "id": grants[1]["id"]}
    assert evaluate(api, merge(2, mixed))["context"]["reason"] == "approval_unverifiable"
    bare = {"id": grants[0]["id"].partition(".")[0]}
    assert evaluate(api, merge(1, bare))["context"]["reason"] == "approval_unverifiable"
    assert evaluate(api, merge(9, grants[0]))["decision"] is False  # outside the bundle


def test_a_bundle_replays_under_its_key_and_cancels_as_a_whole(api, database):
    body = bundle([item(n, d) for n, d in zip(NUMBERS, denials(api), strict=True)])
    first = submit(api, body, key="b-1")
    again = submit(api, body, key="b-1")
    assert first.status_code == again.status_code == 201
    assert first.json["task"]["id"] == again.json["task"]["id"]
    changed = submit(api, {**body, "items": body["items"][:2]}, key="b-1")
    assert_profile_problem(changed, 409, "duplicate_request")
    # Its items' denials are spent: alone, or in another bundle, under another key.
    alone = {**merge(2), "denial": body["items"][1]["denial"]}
    assert_profile_problem(submit(api, alone, key="b-2"), 400, "invalid_denial_binding")
    fresh = denials(api, (7,))
    other = bundle([item(7, fresh[0]), body["items"][2]])
    assert_profile_problem(submit(api, other, key="b-3"), 400, "invalid_denial_binding")
    assert count(database) == (1, 1)

    url = first.json["task"]["status_endpoint"].split("localhost")[-1]
    cancelled = api.post(f"{url}/cancel", json={"reason": "gone"}, scopes=CHECK)
    assert cancelled.status_code == 200, cancelled.json
    assert cancelled.json["task"]["status"] == "cancelled"
    assert [i["status"] for i in cancelled.json["task"]["items"]] == ["cancelled"] * 3
    assert_profile_problem(api.post(f"{url}/cancel", scopes=CHECK), 409, "invalid_task_state")
    # The approver has nothing left to decide.
    with database.reader() as session:
        request_id = session.scalar(select(AccessRequest.id))
    late = decide(api, request_id, "approve")
    assert late.status_code == 409


def test_bundles_the_api_cannot_read_are_refused(api, database):
    good = [item(n, d) for n, d in zip(NUMBERS, denials(api), strict=True)]
    for body in (
        bundle([]),
        bundle("x"),
        bundle([1]),
        bundle(good * 7),  # more than MAX_ITEMS
        {**bundle(good), "resource": good[0]["resource"], "action": good[0]["action"]},
        bundle([{**good[0], "subject": {"type": "user", "id": "eve@example.com"}}]),
        bundle([{**good[0], "context": "x"}]),
    ):
        answer = submit(api, body, key=None)
        assert answer.status_code == 400, answer.json
        assert answer.mimetype == "application/problem+json"
    assert len(good * 7) > MAX_ITEMS
    # Without a denial of its own, an item is not bound (no bundle denials are issued).
    lone = bundle([{k: v for k, v in good[0].items() if k != "denial"}], denial=good[1]["denial"])
    assert_profile_problem(submit(api, lone, key=None), 400, "invalid_denial_binding")
    assert count(database) == (0, 0)


def _expired(api, denial: dict) -> dict:
    """The same call's denial, issued (with the service's key) an hour ago."""
    signer = api.app.extensions["provisioning.approvals"]
    claims = signer.read(denial["binding_token"])
    token, expires = signer.issue(
        approvals.bound(claims),
        claims["evaluation_id"],
        dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )
    return {"expires_at": approvals.timestamp(expires), "binding_token": token}


FAULTS = ("forged", "expired", "duplicated", "foreign", "altered", "mismatched")


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    size=st.integers(1, 4),
    fault=st.sampled_from(FAULTS),
    where=st.integers(0, 3),
    data=st.data(),
)
def test_a_bundle_with_one_bad_item_creates_nothing(api, database, size, fault, where, data):
    """A forged, expired, repeated, another person's, altered or mismatched item refuses the
    whole bundle with the profile's error: nothing is made, never a 5xx."""
    numbers = list(range(1, size + 1))
    good = [item(n, d) for n, d in zip(numbers, denials(api, numbers), strict=True)]
    at = where % size
    bad = dict(good[at])
    if fault == "forged":
        bad["denial"] = {**bad["denial"], "binding_token": bad["denial"]["binding_token"][:-2]}
    elif fault == "expired":
        bad["denial"] = _expired(api, bad["denial"])
    elif fault == "duplicated":
        bad = good[(at + 1) % size] if size > 1 else bad
        good.append(bad)
    elif fault == "foreign":  # Eve's own denial of the same merge, in Ada's bundle
        bad["denial"] = denials(api, [numbers[at]], who="eve@example.com")[0]
    elif fault == "altered":  # other arguments than the denial's
        bad["context"] = {"arguments": {**ARGS, "number": data.draw(st.integers(50, 99))}}
    else:
        bad["denial"] = {**bad["denial"], "expires_at": "2030-01-01T00:00:00Z"}
    good[at] = bad
    answer = submit(api, bundle(good), key=data.draw(st.sampled_from([None, "h-1"])))
    assert answer.status_code < 500
    code = "expired_denial" if fault == "expired" else "invalid_denial_binding"
    assert_profile_problem(answer, 410 if fault == "expired" else 400, code)
    assert count(database) == (0, 0)


def test_a_denied_bundle_denies_every_item_and_approves_nothing(api, database):
    body = bundle([item(n, d) for n, d in zip((4, 5), denials(api, (4, 5)), strict=True)])
    task = submit(api, body, key="d-1").json["task"]
    with database.reader() as session:
        request_id = session.scalar(select(AccessRequest.id))
    no = decide(api, request_id, "deny")
    assert no.status_code == 200, no.json
    status = api.get(f"{REQUESTS}/{task['id']}", scopes=CHECK).json
    assert status["task"]["status"] == "denied" and "result" not in status
    assert [(i["status"], "result" in i) for i in status["task"]["items"]] == [
        ("denied", False)
    ] * 2
    with database.reader() as session:
        row = session.get(AccessRequest, request_id)
        assert row.approval_id is None and all("approval_id" not in i for i in row.call["items"])
