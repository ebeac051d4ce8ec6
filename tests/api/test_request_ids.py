"""One request id follows a change from its request to the log lines, the audit events,
the outbox and the downstream target; no secret the test uses reaches any log line."""

from __future__ import annotations

import io
import json
import logging
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from provisioning import correlation, logs
from provisioning.audit.log import verify
from provisioning.audit.models import AuditEvent
from provisioning.delivery.models import OutboxMessage
from provisioning.delivery.worker import Deliverer
from provisioning.settings import load
from provisioning.web.app import create_app
from tests.api.conftest import AUDIENCE, ISSUER, Api
from tests.api.test_offboardings import seed
from tests.delivery.conftest import RECEIVERS

HOOK_SECRET = "hook-secret-SECRET-0123456789"
TARGET_SECRET = "whsec-SECRET-target-0123456789"
QUERY_SECRET = "SECRET-in-the-query-string"


@pytest.fixture
def captured():
    """Every log line of this process, as production writes them (JSON lines)."""
    out = io.StringIO()
    handler = logs.handler("json", out)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def test_one_request_id_follows_an_offboarding_to_the_target_and_no_secret_is_logged(
    database, issuer, origin, receiver, captured
):
    settings = load(
        database_url=database.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwks_url=issuer.url,
        delivery_allowed_networks=RECEIVERS,
        okta_hook_secrets=HOOK_SECRET,
    )
    api = Api(create_app(settings, database, background=False), database, issuer)
    seed(database, origin)
    static = api.static_token("ops-bot", ["admin:write", "admin:read", "offboarding:write"])
    jwt = issuer.token()
    secrets = [static, jwt, HOOK_SECRET, TARGET_SECRET, QUERY_SECRET, receiver.secret]

    def call(method, path, token, request_id=None, **kw):
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        return api.client.open(path, method=method, headers=headers, **kw)

    target = call(
        "POST",
        "/api/v1/targets",
        jwt,
        "req-target-1",
        json={"name": "hr-feed", "kind": "webhook", "url": receiver.url, "secret": receiver.secret},
    )
    assert target.status_code == 201, target.json
    assert target.headers["X-Request-ID"] == "req-target-1"
    second = call(
        "POST",
        "/api/v1/targets",
        static,
        json={"name": "siem", "kind": "webhook", "url": receiver.url, "secret": TARGET_SECRET},
    )
    generated = second.headers["X-Request-ID"]
    assert second.status_code == 201 and re.fullmatch(r"[0-9a-f]{32}", generated)

    offboarded = call(
        "POST",
        "/api/v1/offboardings",
        static,
        "req-offboard-1",
        json={"employeeNumber": "E7", "reason": "resigned"},
    )
    assert offboarded.status_code == 202, offboarded.json
    assert offboarded.headers["X-Request-ID"] == "req-offboard-1"

    # Credentials where none belong, and hostile request ids: refused or replaced.
    query = call("GET", f"/api/v1/targets?access_token={QUERY_SECRET}&limit=5", static)
    assert query.status_code < 500
    hostile = ["x" * 129, "id\tforged: 1", "<script>", "a b", "", "ünïcode", "-leading"]
    for value in hostile:
        answer = api.client.get("/healthz", headers={"X-Request-ID": value})
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])
    for secret in (HOOK_SECRET, "wrong-SECRET-hook-value"):
        api.client.post("/hooks/okta/events", headers={"Authorization": secret}, json={})
    api.client.get("/api/v1/targets", headers={"Authorization": f"Bearer {TARGET_SECRET}"})

    Deliverer(database, settings).drain()

    # The audit events and outbox messages of the offboarding carry its request id...
    with database.reader() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.request_id == "req-offboard-1")
        ).all()
        messages = session.scalars(
            select(OutboxMessage).where(OutboxMessage.request_id == "req-offboard-1")
        ).all()
        targets_made = session.scalars(
            select(AuditEvent.request_id).where(AuditEvent.subject_type == "target")
        ).all()
        assert verify(session).intact
    actions = {e.action for e in events}
    assert actions == {"offboarding.requested", "grant.revoked", "user.offboarded"}
    assert all(e.actor == "ops-bot" for e in events)
    assert messages and {m.event_type for m in messages} >= {"user.offboarded"}
    assert set(targets_made) == {"req-target-1", generated}
    # ... and so does every delivery of it, to each target.
    delivered = {str(m.event_id) for m in messages}
    assert delivered <= set(receiver.request_ids)
    assert {receiver.request_ids[e] for e in delivered} == {"req-offboard-1"}

    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"time", "level", "logger", "message", "request_id"} <= set(x) for x in lines)
    requests = [x for x in lines if x["logger"] == "provisioning.requests"]
    (line,) = [x for x in requests if x["request_id"] == "req-offboard-1"]
    assert line["route"] == "/api/v1/offboardings" and line["status"] == 202
    assert line["actor"] == "ops-bot" and line["method"] == "POST" and line["duration_ms"] > 0
    assert [x["actor"] for x in requests if x["request_id"] == "req-target-1"] == [
        "ada@example.com"
    ]
    for secret in secrets:
        assert secret not in text
    for value in hostile[:4]:
        assert value not in text


@given(st.text(max_size=300))
def test_a_request_id_is_the_one_given_only_when_plausible(given_id):
    accepted = correlation.accept(given_id)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}", accepted)
    if accepted != given_id:
        assert re.fullmatch(r"[0-9a-f]{32}", accepted)


@pytest.mark.parametrize("plausible", ["bfe9eb29-ab87-4ca3-be83-a1d5d8305716", "req_1:2/3", "A"])
def test_plausible_request_ids_are_kept(plausible):
    assert correlation.accept(plausible) == plausible


def test_log_lines_are_plain_text_on_a_terminal_and_json_elsewhere():
    primary, secondary = os.openpty()
    with open(secondary, "w") as terminal:
        assert isinstance(logs.formatter("auto", terminal), logs.PlainText)
    os.close(primary)
    assert isinstance(logs.formatter("auto", io.StringIO()), logs.JsonLines)
    assert isinstance(logs.formatter("text", io.StringIO()), logs.PlainText)
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "token=%s", ("prov_abcdefgh12",), None
    )
    record.request_id = "r-1"
    assert logs.PlainText().format(record).endswith("x: token=[redacted] [request_id=r-1]")


SHAPES = [
    "Authorization: Bearer {}",
    "okta answered 401 for SSWS {} at /api/v1/users",
    "GET /api/v1/grants?access_token={}&limit=5",
    "refresh with client_secret={} failed",
    "config api-key={} loaded",
    "hook password={}",
]


@given(
    secret=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~",
        min_size=8,
        max_size=80,
    ),
    shape=st.sampled_from(SHAPES),
)
def test_every_credential_shaped_value_is_scrubbed_from_a_line(secret, shape):
    assert logs.scrub(shape.format(secret)) == shape.format("[redacted]")
    assert logs.scrub(f"created prov_{secret} for ops") == "created [redacted] for ops"
