"""Okta event hooks over HTTP: verification, authentication, durability, bad input."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select, text

from provisioning.database import Database
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.okta import inbox
from provisioning.okta.models import DeliveryState, InboxDelivery, ParkedEvent, SeenEvent
from provisioning.people.lifecycle import create_group
from provisioning.settings import load
from provisioning.web.app import create_app
from tests.okta import payloads as p
from tests.org import Org

SECRET = "s3cret-current"
OLD_SECRET = "s3cret-previous"


def make_app(database, *, background=False, **settings):
    settings.setdefault("okta_hook_secrets", f"{SECRET},{OLD_SECRET}")
    app = create_app(load(database_url=database.url, **settings), database, background=background)
    return app


@pytest.fixture
def client(database):
    return make_app(database).test_client()


@pytest.fixture
def mapped(database, origin):
    with database.transaction() as session:
        github = Org(session, origin).connector("github")
        eng = create_group(session, origin, display_name="eng-platform", external_id="00g1eng")
        create_mapping(session, origin, eng, github, "read")


def post(client, body: bytes, secret: str | None = SECRET, header: str = "Authorization"):
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[header] = secret
    return client.post("/hooks/okta/events", data=body, headers=headers)


def deliveries(database) -> list[InboxDelivery]:
    with database.reader() as session:
        return list(session.scalars(select(InboxDelivery).order_by(InboxDelivery.id)))


def live_grants(database) -> int:
    with database.reader() as session:
        return session.scalar(select(func.count(Grant.id)).where(Grant.revoked_at.is_(None)))


# -- verification -------------------------------------------------------------


def test_verification_echoes_the_challenge(client):
    response = client.get(
        "/hooks/okta/events",
        headers={"x-okta-verification-challenge": "abc123", "authorization": SECRET},
    )
    assert response.status_code == 200
    assert response.json == {"verification": "abc123"}


def test_verification_is_authenticated_like_deliveries(client):
    response = client.get("/hooks/okta/events", headers={"X-Okta-Verification-Challenge": "x"})
    assert response.status_code == 401
    missing = client.get("/hooks/okta/events", headers={"Authorization": SECRET})
    assert missing.status_code == 400


# -- authentication -----------------------------------------------------------


@pytest.mark.parametrize("secret", [None, "wrong", "", SECRET + " "])
def test_bad_or_missing_secret_is_401_and_stores_nothing(client, database, secret):
    response = post(client, p.body(p.joined()), secret=secret)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert "WWW-Authenticate" in response.headers
    assert deliveries(database) == []


def test_both_secrets_are_accepted_during_a_rotation(client, database):
    assert post(client, p.body(p.joined()), secret=OLD_SECRET).status_code == 200
    assert post(client, p.body(p.joined()), secret=SECRET).status_code == 200
    assert len(deliveries(database)) == 2


def test_header_name_is_configurable(database):
    client = make_app(database, okta_hook_header="X-Hook-Key").test_client()
    assert post(client, p.body(p.joined())).status_code == 401
    ok = post(client, p.body(p.joined()), header="x-hook-key")
    assert ok.status_code == 200


def test_without_configured_secrets_every_delivery_is_refused(database):
    client = make_app(database, okta_hook_secrets="").test_client()
    assert post(client, p.body(p.joined()), secret="").status_code == 401
    assert post(client, p.body(p.joined())).status_code == 401


# -- durable before acknowledged ----------------------------------------------


def test_delivery_is_stored_then_applied(client, database, mapped):
    response = post(client, p.body(p.joined()))
    assert response.status_code == 200
    (stored,) = deliveries(database)
    assert stored.state in (DeliveryState.PENDING, DeliveryState.PROCESSED)
    inbox.process_pending(database)
    (stored,) = deliveries(database)
    assert stored.state == DeliveryState.PROCESSED
    assert live_grants(database) == 1


def test_a_retried_delivery_is_stored_once(client, database, mapped):
    body = p.body(p.joined(), event_id="delivery-1")
    assert post(client, body).status_code == 200
    assert post(client, body).status_code == 200
    assert len(deliveries(database)) == 1


def test_batched_events_apply_in_one_delivery(client, database, mapped):
    body = p.body(
        p.joined(0),
        p.event("user.lifecycle.create", [p.user("00u2", "bob@example.com", "Bob")], minute=0),
        p.event("group.user_membership.add", [p.user("00u2", "bob@example.com"), p.group()]),
    )
    assert post(client, body).status_code == 200
    progress = inbox.process_pending(database)
    assert progress.outcomes == {"applied": 3}
    assert live_grants(database) == 2


def test_crash_between_commit_and_processing_is_applied_once_after_restart(database, mapped):
    # The delivery is committed and acknowledged; the process dies before applying it.
    receipt = inbox.receive(database, p.body(p.joined()))
    assert receipt.delivery_id is not None and live_grants(database) == 0
    # Restart: the new process's inbox thread picks up what was left pending.
    app = make_app(database, background=True)
    try:
        deadline = time.monotonic() + 10
        while deliveries(database)[0].state != DeliveryState.PROCESSED:
            assert time.monotonic() < deadline, "pending delivery not applied after restart"
            time.sleep(0.05)
    finally:
        app.extensions["provisioning.okta_inbox"].stop()
    assert live_grants(database) == 1
    assert inbox.process_pending(database).deliveries == 0
    with database.reader() as session:
        assert session.scalar(select(func.count(SeenEvent.uuid))) == 1


def test_background_processing_after_the_response(database, mapped):
    app = make_app(database, background=True)
    try:
        client = app.test_client()
        assert post(client, p.body(p.joined())).status_code == 200
        deadline = time.monotonic() + 10
        while live_grants(database) != 1:
            assert time.monotonic() < deadline, "delivery not applied in the background"
            time.sleep(0.05)
    finally:
        app.extensions["provisioning.okta_inbox"].stop()


def _break_event_writes(database: Database) -> None:
    with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON okta_events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON okta_events "
                    "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
                )
            )


def _mend_event_writes(database: Database) -> None:
    with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            conn.execute(text("DROP TRIGGER refuse ON okta_events"))
            conn.execute(text("DROP FUNCTION refuse()"))
        else:
            conn.execute(text("DROP TRIGGER refuse"))


def test_a_processing_failure_keeps_the_delivery_and_retries_it(client, database, mapped):
    _break_event_writes(database)
    try:
        assert post(client, p.body(p.joined())).status_code == 200
        progress = inbox.process_pending(database)
        assert progress.failed == 1
        (stored,) = deliveries(database)
        assert stored.state == DeliveryState.PENDING
        assert "disk on fire" in stored.last_error and stored.attempts == 1
        assert live_grants(database) == 0  # nothing half-applied
        # Not due again yet: backoff.
        assert inbox.process_pending(database).failed == 0
    finally:
        _mend_event_writes(database)
    with database.transaction() as session:
        session.get(InboxDelivery, stored.id).next_attempt_at = None
    assert inbox.process_pending(database).deliveries == 1
    assert live_grants(database) == 1
    assert deliveries(database)[0].last_error is None


def test_503_when_the_delivery_cannot_be_stored(tmp_path):
    broken = Database(f"sqlite:///{tmp_path}/missing-dir/none.db")
    client = make_app(broken).test_client()
    response = post(client, p.body(p.joined()))
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json at all", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"eventType": "com.okta.event_hook"}).encode(), "missing data.events"),
        (json.dumps({"data": {"events": "nope"}}).encode(), "data.events"),
        (json.dumps({"eventId": "a\u0000b", "data": {"events": []}}).encode(), "eventId"),
    ],
)
def test_malformed_deliveries_are_400_kept_for_inspection_and_not_applied(
    client, database, mapped, body, reason
):
    response = post(client, body)
    assert response.status_code == 400
    assert reason in response.json["detail"]
    (kept,) = deliveries(database)
    assert kept.state == DeliveryState.REJECTED and reason in kept.last_error
    assert kept.body == body.decode()
    assert inbox.process_pending(database).deliveries == 0
    assert live_grants(database) == 0


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"uuid": "x"}, "published"),
        ("not an event", "event"),
        (p.event("group.user_membership.add", [p.group()]), "no User target"),
        (p.event("user.lifecycle.deactivate", []), "no User target"),
        (p.event("user.lifecycle.deactivate", [p.user("00u" + "x" * 200)]), "target.0.id"),
        (p.event("user.lifecycle.deactivate", [p.user(login="a\x00b")]), "NUL"),
        (p.event("user.lifecycle.deactivate", [p.user(login="a\x1bb")]), "control character"),
        (p.event("user.lifecycle.deactivate", [p.user(name="\x7f")]), "control character"),
        (
            p.event(
                "group.user_membership.add", [p.user("00uLong", login="\u0130" * 200), p.group()]
            ),
            "once case-folded",
        ),
    ],
)
def test_a_malformed_event_is_parked_and_its_delivery_applied(
    client, database, mapped, event, reason
):
    """What is wrong with one event is that event's business: the delivery is 200."""
    body = p.body(event, p.joined())
    assert post(client, body).status_code == 200
    assert inbox.process_pending(database).outcomes == {"parked": 1, "applied": 1}
    assert live_grants(database) == 1
    with database.reader() as session:
        (parked,) = session.scalars(select(ParkedEvent))
        assert reason in parked.reason and parked.event == event


def test_ten_megabyte_body_is_413_and_stores_nothing(client, database):
    huge = b'{"data": {"events": []}, "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = post(client, huge)
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert deliveries(database) == []


def test_metrics_count_deliveries_and_inbox_depth(client, database):
    post(client, p.body(p.joined()))
    post(client, p.body(p.joined()), secret="wrong")
    text_body = client.get("/metrics").get_data(as_text=True)
    assert 'okta_hook_deliveries_total{result="stored"}' in text_body
    assert 'okta_hook_deliveries_total{result="unauthorised"}' in text_body
    assert "okta_inbox_depth 1.0" in text_body
    assert "okta_hook_ack_seconds_bucket" in text_body
