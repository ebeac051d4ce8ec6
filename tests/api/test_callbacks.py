"""Callback completion of call-approval tasks over HTTP: a task submitted with a callback
notifies a real endpoint on 127.0.0.1 when it closes, signed; callbacks the service must
not call are refused at submission, and nothing is made."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from provisioning.audit.log import Origin, Source
from provisioning.delivery import outbox, webhook
from provisioning.delivery.models import MessageState, OutboxMessage, Target, TargetKind
from provisioning.delivery.worker import Deliverer
from provisioning.requests import callbacks, workflow
from provisioning.requests.models import AccessRequest
from provisioning.settings import load
from tests.api.conftest import Api, make_app
from tests.api.test_call_approvals import (  # noqa: F401 (org: the same organisation)
    ASK,
    CHECK,
    REQUESTS,
    _request_id,
    assert_profile_problem,
    call,
    evaluate,
    org,
    submission,
    submit,
)
from tests.delivery.conftest import keep_delivering
from tests.delivery.servers import CallbackReceiver

SECRET = "callback-key-0123456789"
pytestmark = pytest.mark.usefixtures("org")


@pytest.fixture
def pep() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver(SECRET)
    yield server
    server.stop()


@pytest.fixture
def configured(database, pep) -> dict:
    """Callbacks allowed under the PEP's /callbacks/ on 127.0.0.1 (an allowed network)."""
    return {
        "callback_allowlist": f"{pep.url}/",
        "callback_secret": SECRET,
        "delivery_allowed_networks": "127.0.0.1/32",
        "delivery_backoff_seconds": 0.01,
        "delivery_max_backoff_seconds": 0.05,
    }


@pytest.fixture
def api(database, issuer, configured) -> Api:
    return Api(make_app(database, issuer, **configured), database, issuer)


@pytest.fixture
def deliverer(database, configured) -> Iterator[Deliverer]:
    worker = Deliverer(database, load(database_url=database.url, **configured))
    yield worker
    worker.stop()


def opened(api, callback, key="k-1") -> dict:
    body = call()
    answer = submit(api, submission(body, evaluate(api, body), callback=callback), key=key)
    assert answer.status_code == 201, answer.json
    return answer.json["task"]


def decide(api, task: dict, decision: str, who: str = "olga@example.com") -> dict:
    """The stage's approver (Olga, the owner, by default) decides; the request answered."""
    answer = api.post(
        f"/api/v1/requests/{_request_id(api, task['id'])}/decision",
        json={"decision": decision},
        scopes=ASK,
        sub=who,
    )
    assert answer.status_code == 200, answer.json
    return answer.json


def callback_messages(database) -> list[OutboxMessage]:
    with database.reader() as session:
        return list(
            session.scalars(
                select(OutboxMessage)
                .join(Target, Target.id == OutboxMessage.target_id)
                .where(Target.kind == TargetKind.CALLBACK)
                .order_by(OutboxMessage.id)
            )
        )


def counts(database) -> tuple[int, int]:
    """(call tasks, callback messages)."""
    with database.reader() as session:
        tasks = session.scalar(select(func.count()).select_from(AccessRequest))
    return tasks, len(callback_messages(database))


def test_an_approved_task_notifies_its_callback_signed_and_retried(api, database, pep, deliverer):
    state = {"session": "s-1", "turn": 7}
    task = opened(api, {"endpoint": f"{pep.url}/t/1?run=a", "state": state})
    with database.reader() as session:
        kept = session.scalar(select(AccessRequest.callback))
    assert kept == {
        "endpoint": f"{pep.url}/t/1?run=a",
        "events": list(callbacks.EVENTS),
        "state": state,
        "status_endpoint": task["status_endpoint"],
    }
    assert callback_messages(database) == []  # pending: nothing to tell yet

    pep.answer = 503  # the PEP is down at first: delivery retries
    decide(api, task, "approve")
    [message] = callback_messages(database)  # written with the decision
    assert message.payload["endpoint"] == f"{pep.url}/t/1?run=a"
    deliverer.deliver_once()
    assert pep.refused == 1 and pep.received == []
    pep.answer = None
    keep_delivering(deliverer, lambda: len(pep.received) == 1)

    [got] = pep.received
    assert got["path"] == "/callbacks/t/1" and got["event_type"] == "request.callback"
    assert got["event_id"] == str(message.event_id)
    assert got["body"] == {
        "state": state,
        "task": {
            "id": task["id"],
            "status": "approved",
            "status_endpoint": task["status_endpoint"],
        },
    }  # notification only: no result, the PEP reads the status endpoint
    signature, raw = pep.raw[0]
    assert webhook.verify(SECRET, signature, raw)
    assert not webhook.verify("another-key-0123456789", signature, raw)
    assert pep.rejected_signatures == 0
    assert callback_messages(database)[0].state == MessageState.DELIVERED
    status = api.get(task["status_endpoint"].split("localhost")[-1], scopes=CHECK).json
    assert status["task"]["status"] == "approved" and status["result"]["approval"]["id"]


def test_cancelled_and_expired_tasks_notify(api, database, pep, deliverer):
    cancelled = opened(api, {"endpoint": f"{pep.url}/c", "state": "one"}, key="k-1")
    answer = api.post(f"{REQUESTS}/{cancelled['id']}/cancel", scopes=CHECK)
    assert answer.status_code == 200
    lapsing = opened(api, {"endpoint": f"{pep.url}/e"}, key="k-2")
    with database.transaction() as session:
        session.execute(
            update(AccessRequest)
            .where(AccessRequest.task_id == lapsing["id"])
            .values(deadline=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    with database.transaction() as session:
        assert workflow.lapse(session, Origin("expiry", Source.JOB)) == 1
    keep_delivering(deliverer, lambda: len(pep.received) == 2)
    bodies = {got["path"]: got["body"] for got in pep.received}
    assert bodies["/callbacks/c"] == {
        "state": "one",
        "task": {
            "id": cancelled["id"],
            "status": "cancelled",
            "status_endpoint": cancelled["status_endpoint"],
        },
    }
    assert bodies["/callbacks/e"] == {  # no state sent, none returned
        "task": {
            "id": lapsing["id"],
            "status": "expired",
            "status_endpoint": lapsing["status_endpoint"],
        }
    }


def test_only_the_events_asked_for_are_told(api, database, pep, deliverer):
    quiet = opened(api, {"endpoint": f"{pep.url}/q", "events": ["approved"]}, key="k-1")
    decide(api, quiet, "deny")
    assert callback_messages(database) == []
    told = opened(api, {"endpoint": f"{pep.url}/d", "events": ["denied", "denied"]}, key="k-2")
    decide(api, told, "deny")
    keep_delivering(deliverer, lambda: len(pep.received) == 1)
    assert pep.received[0]["body"]["task"] == {
        "id": told["id"],
        "status": "denied",
        "status_endpoint": told["status_endpoint"],
    }


def test_a_two_stage_chain_tells_only_when_the_task_closes(api, database, pep):
    policy = {"approvers": ["manager", "owner"], "max_days": 14, "decide_within_days": 5}
    answer = api.request(
        "PUT", "/api/v1/request-policies/github", json=policy, scopes=["admin:write"]
    )
    assert answer.status_code == 200
    task = opened(api, {"endpoint": f"{pep.url}/two"})
    assert decide(api, task, "approve", who="boss@example.com")["state"] == "pending"
    assert callback_messages(database) == []
    decide(api, task, "approve")
    assert [m.payload["body"]["task"]["status"] for m in callback_messages(database)] == [
        "approved"
    ]


def test_the_callback_is_part_of_the_idempotent_body(api, database, pep):
    body = call()
    denial = evaluate(api, body)
    first = submission(body, denial, callback={"endpoint": f"{pep.url}/i", "state": "a"})
    assert submit(api, first, key="same").status_code == 201
    again = submit(api, first, key="same")
    assert again.status_code == 201
    other = submission(body, denial, callback={"endpoint": f"{pep.url}/i", "state": "b"})
    assert_profile_problem(submit(api, other, key="same"), 409, "duplicate_request")
    none = submission(body, denial)
    assert_profile_problem(submit(api, none, key="same"), 409, "duplicate_request")
    assert counts(database)[0] == 1


def refused(api, database, callback, detail: str | None = None) -> None:
    before = counts(database)
    body = call()
    answer = submit(api, submission(body, evaluate(api, body), callback=callback), key=None)
    assert answer.status_code == 400, answer.json
    assert answer.mimetype == "application/problem+json"
    assert answer.json["type"] == "urn:provisioning:problem:invalid-callback", answer.json
    if detail is not None:
        assert detail in answer.json["detail"], answer.json
    assert counts(database) == before


def test_callbacks_the_service_must_not_call_are_refused(api, database, pep):
    base = pep.url
    for callback, detail in [
        ("https://x", "is an object"),
        ({"state": "s"}, "endpoint"),
        ({"endpoint": "https://pep.example.com/callbacks/x"}, "ALLOWLIST"),
        ({"endpoint": f"http://127.0.0.1:{pep.port + 1}/callbacks/x"}, "ALLOWLIST"),
        ({"endpoint": f"{base}evil/x"}, "ALLOWLIST"),  # a prefix is a path, not a string
        ({"endpoint": f"http://localhost:{pep.port}/callbacks/x"}, "ALLOWLIST"),
        ({"endpoint": f"{base}/../admin"}, ".."),
        ({"endpoint": f"{base}/%2e%2e/admin"}, ".."),
        ({"endpoint": f"{base}/x%2F..%2F..%2Fadmin"}, "encoded slash"),
        ({"endpoint": f"{base}/x\\..\\admin"}, "backslash"),
        ({"endpoint": f"http://127.0.0.1:{pep.port}:1/callbacks/x"}, "not a URL"),
        ({"endpoint": "http://127.0.0.1:0/callbacks/x"}, "ALLOWLIST"),
        ({"endpoint": f"http://user:pw@127.0.0.1:{pep.port}/callbacks/x"}, "credentials"),
        ({"endpoint": f"{base}/x#frag"}, "fragment"),
        ({"endpoint": f"{base}/a b"}, "space"),
        ({"endpoint": f"{base}/x", "events": []}, "events"),
        ({"endpoint": f"{base}/x", "events": ["approved", "granted"]}, "events"),
        ({"endpoint": f"{base}/x", "events": "approved"}, "events"),
        ({"endpoint": f"{base}/x", "state": "x" * 1100}, "1024 bytes"),
        ({"endpoint": f"{base}/x", "state": {"k": ["é" * 600]}}, "1024 bytes"),
        ({"endpoint": f"{base}/x", "state": {"k": "\ud800"}}, "JSON this service can keep"),
    ]:
        refused(api, database, callback, detail)


@pytest.mark.parametrize(
    ("allowlist", "endpoint", "detail"),
    [
        # Allowlisted, yet internal: the egress policy still refuses.
        ("https://10.1.2.3/", "https://10.1.2.3/cb", "a private address"),
        ("https://169.254.169.254/", "https://169.254.169.254/cb", "metadata"),
        ("https://[::1]/", "https://[::1]/cb", "loopback"),
        ("https://metadata.google.internal/", "https://metadata.google.internal/cb", "metadata"),
        # Plain http only where an allowed network vouches for every address.
        ("http://10.1.2.3/", "http://10.1.2.3/cb", "plain http"),
    ],
)
def test_internal_and_plain_http_endpoints_are_refused_unless_allowed(
    database, issuer, pep, allowlist, endpoint, detail
):
    api = Api(
        make_app(
            database,
            issuer,
            callback_allowlist=allowlist,
            callback_secret=SECRET,
            delivery_allowed_networks="127.0.0.1/32",
        ),
        database,
        issuer,
    )
    refused(api, database, {"endpoint": endpoint}, detail)


def test_without_an_allowlist_no_callback_is_taken(database, issuer, pep):
    api = Api(make_app(database, issuer), database, issuer)
    refused(api, database, {"endpoint": f"{pep.url}/x"}, "ALLOWLIST is empty")
    # A submission without a callback is taken as before.
    assert opened(api, None)["status"] == "pending"


def test_the_callback_target_hears_of_nothing_else(api, database, pep):
    task = opened(api, {"endpoint": f"{pep.url}/x"})
    with database.reader() as session:
        target = session.scalar(select(Target).where(Target.kind == TargetKind.CALLBACK))
        assert target is not None and target.name == outbox.CALLBACK_TARGET
        owed = set(
            session.scalars(
                select(OutboxMessage.event_type).where(OutboxMessage.target_id == target.id)
            )
        )
    assert owed == set()  # request.created went to the chat target only
    decide(api, task, "approve")
    assert {m.event_type for m in callback_messages(database)} == {"request.callback"}
    # Admins see it, but neither make nor point it.
    listed = api.get("/api/v1/targets", scopes=["admin:read"]).json["items"]
    assert "callback" in {t["kind"] for t in listed}
    made = api.post(
        "/api/v1/targets",
        json={"name": "mine", "kind": "callback", "url": f"{pep.url}/x", "secret": "s" * 20},
        scopes=["admin:write"],
    )
    assert made.status_code == 422
    pointed = api.patch(
        f"/api/v1/targets/{target.id}", json={"url": f"{pep.url}/y"}, scopes=["admin:write"]
    )
    assert pointed.status_code == 422


def test_without_the_key_nothing_is_sent(database, pep, api, configured):
    task = opened(api, {"endpoint": f"{pep.url}/x"})
    decide(api, task, "approve")
    unsigned = {**configured, "callback_allowlist": "", "callback_secret": None}
    worker = Deliverer(database, load(database_url=database.url, **unsigned))
    try:
        worker.deliver_once()
    finally:
        worker.stop()
    assert pep.received == [] and pep.refused == 0
    [message] = callback_messages(database)
    assert message.state == MessageState.PENDING and "CALLBACK_SECRET" in message.last_error


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_callback_body_is_a_5xx_and_a_refused_one_makes_nothing(api, database, pep, data):
    endpoint = data.draw(
        st.one_of(
            JSON,
            st.builds(lambda tail: f"{pep.url}/{tail}", st.text(max_size=30)),
            st.sampled_from(
                [f"{pep.url}/ok", "https://10.0.0.1/x", f"{pep.url}/%2E%2E/x", f"{pep.url}\\x"]
            ),
        )
    )
    callback = data.draw(
        st.one_of(
            JSON,
            st.fixed_dictionaries(
                {"endpoint": st.just(endpoint)},
                optional={
                    "state": JSON,
                    "events": st.one_of(JSON, st.lists(st.sampled_from(callbacks.EVENTS))),
                    "extra": JSON,
                },
            ),
        )
    )
    before = counts(database)
    body = call()
    answer = submit(api, submission(body, evaluate(api, body), callback=callback), key=None)
    assert answer.status_code in (201, 400), answer.json
    if answer.status_code == 400:
        assert answer.mimetype == "application/problem+json"
        assert counts(database) == before
        return
    with database.reader() as session:
        kept = session.scalar(
            select(AccessRequest.callback).where(AccessRequest.task_id == answer.json["task"]["id"])
        )
    if callback is None:
        assert kept is None
    else:
        assert kept["endpoint"] == callback["endpoint"]
        assert kept.get("state") == callback.get("state")
        assert set(kept["events"]) <= set(callbacks.EVENTS)


def test_state_comes_back_unmodified(api, database, pep, deliverer):
    state = {"z": [1, 2.5, None, True], "a": "nul\x00 é 😀", "n": -0.0, "big": 2**70}
    task = opened(api, {"endpoint": f"{pep.url}/s", "state": state, "events": ["cancelled"]})
    assert api.post(f"{REQUESTS}/{task['id']}/cancel", scopes=CHECK).status_code == 200
    keep_delivering(deliverer, lambda: len(pep.received) == 1)
    assert pep.received[0]["body"]["state"] == state
    assert list(pep.received[0]["body"]["state"]) == ["z", "a", "n", "big"]
