"""When someone leaves, their access goes, whatever the order, duplication or times of the events.

Each test delivers through the real hook endpoint (Flask test client) and the inbox,
as Okta does: deactivations before the person is known, dates far in the future, an
event no one can apply next to a real deactivation, and the console's Preview.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import func, select, text

from provisioning.audit.log import Origin, Source
from provisioning.database import utcnow
from provisioning.entitlements.models import Grant
from provisioning.identity.models import Membership, User
from provisioning.okta import inbox
from provisioning.okta.models import (
    DeliveryState,
    EventOutcome,
    InboxDelivery,
    ParkedEvent,
    SeenEvent,
)
from provisioning.oversight.models import Finding
from provisioning.tokens import credentials
from tests.hooks.test_okta import make_app, post
from tests.okta import payloads as p
from tests.scim.conftest import SCIM_JSON, USER_SCHEMA

ADA = p.user()  # Okta id 00u1ada
DEACTIVATING = [
    "user.lifecycle.deactivate",
    "user.lifecycle.suspend",
    "user.lifecycle.delete.initiated",
]


@pytest.fixture
def app(database):
    return make_app(database)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def mapped(database, origin):
    """eng-platform (Okta 00g1eng) is mapped to github."""
    from provisioning.entitlements.mappings import create_mapping
    from provisioning.people.lifecycle import create_group
    from tests.org import Org

    with database.transaction() as session:
        github = Org(session, origin).connector("github")
        eng = create_group(session, origin, display_name="eng-platform", external_id="00g1eng")
        create_mapping(session, origin, eng, github, "read")


def deliver(client, database, *events: dict) -> None:
    response = post(client, p.body(*events))
    assert response.status_code == 200, response.get_data(as_text=True)
    inbox.process_pending(database)


def live_grants(database) -> int:
    with database.reader() as session:
        return session.scalar(select(func.count(Grant.id)).where(Grant.revoked_at.is_(None)))


def ada(database) -> User | None:
    with database.reader() as session:
        return session.scalar(select(User).where(User.external_id == "00u1ada"))


def token(database, *scopes: str) -> dict[str, str]:
    name = f"reader-{uuid.uuid4().hex[:8]}"
    with database.transaction() as session:
        secret = credentials.create(session, name, list(scopes), Origin("test", Source.CLI))
    return {"Authorization": f"Bearer {secret}"}


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# -- 1. a fact about someone we do not know yet is kept ------------------------


@pytest.mark.parametrize("event_type", DEACTIVATING)
def test_a_deactivation_before_the_create_and_add_leaves_no_access(
    client, database, mapped, event_type
):
    deliver(client, database, p.event(event_type, [ADA], minute=10))
    # Published earlier, delivered later: the create and the membership.
    deliver(
        client,
        database,
        p.event("user.lifecycle.create", [ADA], minute=0),
        p.joined(1),
    )
    assert ada(database).active is False
    assert live_grants(database) == 0
    # Repeated, in the other order and again, nothing gives access back.
    deliver(client, database, p.joined(2), p.event("user.lifecycle.activate", [ADA], minute=3))
    assert live_grants(database) == 0


def test_a_removal_before_the_add_leaves_no_membership(client, database, mapped):
    deliver(client, database, p.left(10))
    deliver(client, database, p.joined(1))
    with database.reader() as session:
        assert session.scalar(select(Membership.present)) is False
    assert live_grants(database) == 0


def test_a_removal_from_a_group_not_yet_known_holds_when_the_group_appears(
    client, database, origin
):
    """The user is known, the group is not: the removal waits for the group."""
    later = p.group("00g9new", "late-group")
    deliver(client, database, p.event("user.lifecycle.create", [ADA], minute=0))
    deliver(client, database, p.event("group.user_membership.remove", [ADA, later], minute=10))
    deliver(client, database, p.event("group.user_membership.add", [ADA, later], minute=5))
    with database.reader() as session:
        assert session.scalar(select(Membership.present)) is False


def test_a_removal_for_a_known_pair_without_a_membership_outranks_a_late_add(
    client, database, mapped
):
    deliver(client, database, p.event("user.lifecycle.create", [ADA], minute=0))
    deliver(client, database, p.left(10))
    deliver(client, database, p.joined(5))
    assert live_grants(database) == 0


def test_a_scim_create_with_that_externalid_applies_the_kept_deactivation(
    app, client, database, mapped
):
    deliver(client, database, p.event("user.lifecycle.deactivate", [ADA], minute=10))
    headers = {**token(database, "scim:provision"), "Content-Type": SCIM_JSON}
    body = {"schemas": [USER_SCHEMA], "userName": "ada@example.com", "externalId": "00u1ada"}
    created = client.post("/scim/v2/Users", data=json.dumps(body), headers=headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    # A SCIM create has no published time: the kept deactivation still applies (deny wins).
    assert created.json["active"] is False
    assert ada(database).active is False
    deliver(client, database, p.joined(1))
    assert live_grants(database) == 0


# -- 2. a time in the future of its receipt is not trusted ---------------------


def test_a_future_dated_event_does_not_outrank_a_real_deactivation(client, database, mapped):
    deliver(client, database, p.joined(0))
    assert live_grants(database) == 1
    future = p.event("user.lifecycle.activate", [ADA])
    future["published"] = "2099-01-01T00:00:00.000Z"
    deliver(client, database, future)
    # The real deactivation, published now: after the future-dated event was received.
    leave = p.event("user.lifecycle.deactivate", [ADA])
    leave["published"] = iso(utcnow())
    deliver(client, database, leave)
    assert ada(database).active is False
    assert live_grants(database) == 0
    with database.reader() as session:
        seen = session.get(SeenEvent, future["uuid"])
        received = session.scalar(select(func.max(InboxDelivery.received_at)))
        assert seen.published == dt.datetime(2099, 1, 1, tzinfo=dt.UTC)  # as sent, kept
        assert seen.clamped and seen.ordered_at < received  # ordered at its receipt
        assert session.get(SeenEvent, leave["uuid"]).outcome == EventOutcome.APPLIED
        counted = [d.outcomes for d in session.scalars(select(InboxDelivery))]
        assert {"applied": 1, "clamped": 1} in counted
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'okta_events_clamped_total{source="okta-hook"}' in metrics


def test_a_future_dated_membership_does_not_pin_it(client, database, mapped):
    far = p.joined()
    far["published"] = "2999-06-01T00:00:00Z"
    deliver(client, database, far)
    assert live_grants(database) == 1
    gone = p.left()
    gone["published"] = iso(utcnow())
    deliver(client, database, gone)
    assert live_grants(database) == 0


# -- 3. one event that cannot be applied never blocks the others --------------

POISON_TIMES = [
    "9999-12-31T23:59:59-23:59",  # year 10000 once in UTC
    "0001-01-01T00:00:00+23:59",  # year 0 once in UTC
    "9999-12-31T23:59:59Z",  # year 9999
    "0001-01-01T00:00:00Z",  # year 1
    "10000-01-01T00:00:00",  # naive, out of range
    "2026-13-45T99:00:00Z",
    12345678901234567890,
]


@pytest.mark.parametrize("published", POISON_TIMES)
def test_a_poison_event_is_parked_and_the_deactivation_beside_it_applied(
    client, database, mapped, published
):
    deliver(client, database, p.joined(0))
    bob = p.user("00u2bob", "bob@example.com", "Bob")
    poison = p.event("group.user_membership.add", [bob, p.group()], minute=5)
    poison["published"] = published
    deliver(client, database, poison, p.event("user.lifecycle.deactivate", [ADA], minute=6))
    assert ada(database).active is False
    assert live_grants(database) == 0
    with database.reader() as session:
        (delivery,) = session.scalars(select(InboxDelivery).where(InboxDelivery.id == 2))
        assert delivery.state == DeliveryState.PROCESSED
        assert delivery.outcomes == {"parked": 1, "applied": 1}
        assert session.scalar(select(func.count(User.id)).where(User.external_id == "00u2bob")) == 0
    headers = token(database, "admin:read")
    listed = client.get("/api/v1/okta/parked-events", headers=headers)
    assert listed.status_code == 200
    (parked,) = listed.json["items"]
    assert parked["uuid"] == poison["uuid"]
    assert parked["event_type"] == "group.user_membership.add"
    assert "published" in parked["reason"]
    assert parked["event"] == json.loads(json.dumps(poison))
    one = client.get(f"/api/v1/okta/parked-events/{parked['id']}", headers=headers)
    assert one.status_code == 200 and one.json == parked
    findings = client.get("/api/v1/findings?kind=parked_okta_event&state=open", headers=headers)
    (finding,) = findings.json["items"]
    assert finding["subject_id"] == str(parked["id"])
    assert finding["evidence"]["reason"] == parked["reason"]


def test_an_event_whose_application_fails_is_parked_alone(client, database, mapped, origin):
    """Okta names a login another live user already holds: that event alone is parked."""
    from tests.org import Org

    with database.transaction() as session:
        Org(session, origin).user("bob@example.com", external_id="00u-other")
    clash = p.event(
        "group.user_membership.add", [p.user("00u2bob", "bob@example.com"), p.group()], minute=1
    )
    deliver(
        client, database, p.joined(0), clash, p.event("user.lifecycle.suspend", [ADA], minute=2)
    )
    assert ada(database).active is False and live_grants(database) == 0
    with database.reader() as session:
        assert session.get(SeenEvent, clash["uuid"]).outcome == EventOutcome.PARKED
        assert session.scalar(select(func.count(InboxDelivery.id))) == 1
        assert session.scalar(select(InboxDelivery.state)) == DeliveryState.PROCESSED
    parked = client.get("/api/v1/okta/parked-events", headers=token(database, "admin:read"))
    assert "already taken" in parked.json["items"][0]["reason"]


def test_a_parked_event_delivered_again_is_not_parked_twice(client, database, mapped):
    poison = p.joined()
    poison["published"] = "9999-12-31T23:59:59-23:59"
    deliver(client, database, poison)
    deliver(client, database, poison)
    with database.reader() as session:
        assert session.scalar(select(func.count(Finding.id))) == 1


def test_parked_events_need_admin_read_and_page_like_other_lists(client, database, mapped):
    for _ in range(3):
        poison = p.joined()
        poison["published"] = "not a time"
        deliver(client, database, poison)
    assert client.get("/api/v1/okta/parked-events").status_code == 401
    wrong = client.get("/api/v1/okta/parked-events", headers=token(database, "decisions:check"))
    assert wrong.status_code == 403
    assert wrong.mimetype == "application/problem+json"
    headers = token(database, "admin:read")
    first = client.get("/api/v1/okta/parked-events?limit=2", headers=headers)
    assert len(first.json["items"]) == 2 and first.json["next_cursor"]
    rest = client.get(
        f"/api/v1/okta/parked-events?limit=2&cursor={first.json['next_cursor']}", headers=headers
    )
    assert len(rest.json["items"]) == 1 and rest.json["next_cursor"] is None
    missing = client.get("/api/v1/okta/parked-events/999", headers=headers)
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    bad = client.get("/api/v1/okta/parked-events?cursor=%%%", headers=headers)
    assert bad.status_code == 400 and bad.mimetype == "application/problem+json"


# -- 4. the console's Preview -------------------------------------------------


def preview_delivery() -> dict:
    """What Okta's console sends from Workflow > Event Hooks > Preview for an event type
    that has no recent System Log event: a sample whose unknown fields are null."""
    return {
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "https://example.okta.com/api/v1/eventHooks/who8tt6dDWqG3TZY10g4",
        "eventId": "7bba6b4c-7b3f-4b7e-9f3f-9b3e0b0f2d11",
        "eventTime": "2026-12-05T10:00:00.000Z",
        "contentType": "application/json",
        "data": {
            "events": [
                {
                    "uuid": "1c4f6a7e-9e2a-11ef-8c7a-6b1c7e0d2a55",
                    "published": "2026-12-05T10:00:00.000Z",
                    "eventType": event_type,
                    "version": "0",
                    "displayMessage": "Deactivate Okta user",
                    "severity": "INFO",
                    "client": None,
                    "device": None,
                    "actor": None,
                    "outcome": None,
                    "target": None,
                    "transaction": None,
                    "debugContext": None,
                    "legacyEventType": None,
                    "authenticationContext": None,
                    "securityContext": None,
                    "insertionTimestamp": None,
                }
                for event_type in ("user.lifecycle.deactivate", "group.user_membership.add")
            ]
        },
    }


def test_the_console_preview_is_answered_200_recorded_and_changes_nothing(client, database, mapped):
    deliver(client, database, p.joined(0))
    before = live_grants(database)
    body = preview_delivery()
    body["data"]["events"][1]["uuid"] = "1c4f6a7e-9e2a-11ef-8c7a-6b1c7e0d2a56"
    response = post(client, json.dumps(body).encode())
    assert response.status_code == 200
    inbox.process_pending(database)
    assert live_grants(database) == before and ada(database).active is True
    with database.reader() as session:
        delivery = session.scalar(
            select(InboxDelivery).where(InboxDelivery.delivery_id == body["eventId"])
        )
        assert delivery.state == DeliveryState.PROCESSED
        assert delivery.outcomes == {"preview": 2}
        for sample in body["data"]["events"]:
            assert session.get(SeenEvent, sample["uuid"]).outcome == EventOutcome.PREVIEW
        assert session.scalar(select(func.count(Finding.id))) == 0


@pytest.fixture
def refuse_user(database):
    """The database itself refuses one user's row, as a broken column or constraint would.

    The trigger is dropped afterwards: on PostgreSQL the tests share one schema.
    """

    def refuse(user_name: str) -> None:
        with database.engine.begin() as conn:
            if database.dialect == "postgresql":
                conn.execute(
                    text(
                        "CREATE FUNCTION refuse_user() RETURNS trigger LANGUAGE plpgsql AS "
                        f"$$ BEGIN IF NEW.user_name = '{user_name}' THEN "
                        "RAISE EXCEPTION 'row refused'; END IF; RETURN NEW; END $$"
                    )
                )
                conn.execute(
                    text(
                        "CREATE TRIGGER refuse_user BEFORE INSERT ON users "
                        "FOR EACH ROW EXECUTE FUNCTION refuse_user()"
                    )
                )
            else:
                conn.execute(
                    text(
                        "CREATE TRIGGER refuse_user BEFORE INSERT ON users "
                        f"WHEN NEW.user_name = '{user_name}' "
                        "BEGIN SELECT RAISE(ABORT, 'row refused'); END"
                    )
                )

    yield refuse
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "DROP TRIGGER IF EXISTS refuse_user"
                + (" ON users" if database.dialect == "postgresql" else "")
            )
        )
        if database.dialect == "postgresql":
            conn.execute(text("DROP FUNCTION IF EXISTS refuse_user()"))


def test_an_event_the_database_keeps_refusing_is_parked_once_the_retries_are_spent(
    client, database, mapped, refuse_user
):
    refuse_user("bob@example.com")
    deliver(client, database, p.joined(0))
    bob = p.event(
        "group.user_membership.add", [p.user("00u2bob", "bob@example.com"), p.group()], minute=1
    )
    post(client, p.body(bob, p.event("user.lifecycle.deactivate", [ADA], minute=2)))
    # The database may be failing as a whole: the delivery is retried, nothing half-applied.
    for attempt in range(inbox.DATABASE_RETRIES):
        assert inbox.process_pending(database).failed == 1
        assert ada(database).active is True
        with database.transaction() as session:
            delivery = session.scalar(select(InboxDelivery).where(InboxDelivery.id == 2))
            assert delivery.attempts == attempt + 1 and "row refused" in delivery.last_error
            delivery.next_attempt_at = None
    # Retries spent: the event it keeps refusing is parked, the rest applied.
    assert inbox.process_pending(database).outcomes == {"parked": 1, "applied": 1}
    assert ada(database).active is False and live_grants(database) == 0
    with database.reader() as session:
        (parked,) = session.scalars(select(ParkedEvent))
        assert parked.uuid == bob["uuid"] and "row refused" in parked.reason
