"""/api/v1/targets: validated, secrets never echoed; dead letters listed and retried."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from provisioning.delivery.models import OutboxMessage, Target
from provisioning.delivery.worker import Deliverer
from provisioning.entitlements.mappings import create_mapping
from provisioning.settings import load
from tests.api.conftest import Api, make_app
from tests.delivery.conftest import RECEIVERS
from tests.org import Org

WRITE = ["admin:write"]
READ = ["admin:read"]
SECRET = "whsec-test-0123456789"


@pytest.fixture
def seeded(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        lee = org.user("lee@example.com", employee_number="E7")
        group = org.group()
        for slug in ("github", "slack"):
            create_mapping(session, origin, group, org.connector(slug), "read")
    return lee, group


@pytest.fixture
def local_api(database, issuer) -> Api:
    """The API of a service allowed to deliver to this test's receivers on 127.0.0.1."""
    return Api(make_app(database, issuer, delivery_allowed_networks=RECEIVERS), database, issuer)


@pytest.fixture
def deliverer(database):
    settings = load(
        database_url=database.engine.url.render_as_string(hide_password=False),
        delivery_backoff_seconds=0.01,
        delivery_max_backoff_seconds=0.02,
        delivery_allowed_networks=RECEIVERS,
    )
    worker = Deliverer(database, settings)
    yield worker
    worker.stop()


def count(database, model) -> int:
    with database.reader() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_target_is_created_read_and_changed_without_showing_its_secret(api, database, seeded):
    created = api.post(
        "/api/v1/targets",
        json={
            "name": "siem",
            "kind": "webhook",
            "url": "https://siem.example.com/hooks",
            "secret": SECRET,
            "connectors": ["slack"],
        },
        scopes=WRITE,
    )
    assert created.status_code == 201, created.json
    assert created.headers["Location"] == f"/api/v1/targets/{created.json['id']}"
    assert "secret" not in created.json and SECRET not in created.get_data(as_text=True)
    assert created.json["connectors"] == ["slack"]
    assert created.json["max_attempts"] == 15 and created.json["pending"] == 0

    read = api.get(created.headers["Location"], scopes=READ)
    assert read.json == created.json
    etag = read.headers["ETag"]
    changed = api.patch(
        created.headers["Location"],
        json={"connectors": None, "enabled": False},
        scopes=WRITE,
        headers={"If-Match": etag},
    )
    assert changed.status_code == 200 and changed.json["connectors"] is None
    assert changed.json["enabled"] is False
    stale = api.patch(
        created.headers["Location"],
        json={"enabled": True},
        scopes=WRITE,
        headers={"If-Match": etag},
    )
    assert stale.status_code == 412
    listed = api.get("/api/v1/targets", scopes=READ)
    assert [t["name"] for t in listed.json["items"]] == ["siem"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "https://user:pw@example.com/x"}, "url"),
        ({"url": "http://"}, "url"),
        ({"connectors": ["nope"]}, "connectors"),
        ({"kind": "email"}, "kind"),
        ({"secret": "short"}, "secret"),
        ({"colour": "red"}, "colour"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_targets_are_refused_naming_the_field_and_nothing_is_written(
    api, database, seeded, body, field
):
    valid = {"name": "siem", "kind": "webhook", "url": "https://x.example/h", "secret": SECRET}
    answer = api.post("/api/v1/targets", json={**valid, **body}, scopes=WRITE)
    assert answer.status_code == 422, answer.json
    assert answer.mimetype == "application/problem+json"
    assert field in {e["field"] for e in answer.json["errors"]}
    assert count(database, Target) == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:8080/hook", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://metadata.google.internal/", "metadata.google.internal is a cloud metadata name"),
        ("https://[::ffff:10.0.0.1]/hook", "::ffff:10.0.0.1 is a private address inside IPv6"),
    ],
)
def test_a_target_at_an_internal_address_is_422_naming_why(api, database, seeded, url, reason):
    body = {"name": "inside", "kind": "scim", "url": url, "secret": SECRET}
    answer = api.post("/api/v1/targets", json=body, scopes=WRITE)
    assert answer.status_code == 422 and answer.mimetype == "application/problem+json"
    assert answer.json["errors"][0]["field"] == "url"
    assert reason in answer.json["detail"]
    assert "PROVISIONING_DELIVERY_ALLOWED_NETWORKS" in answer.json["detail"]
    assert count(database, Target) == 0

    body["url"] = "https://8.8.8.8/hook"
    made = api.post("/api/v1/targets", json=body, scopes=WRITE)
    moved = api.patch(
        made.headers["Location"],
        json={"url": url},
        scopes=WRITE,
        headers={"If-Match": made.headers["ETag"]},
    )
    assert moved.status_code == 422 and reason in moved.json["detail"]
    assert api.get(made.headers["Location"], scopes=READ).json["url"] == "https://8.8.8.8/hook"


def test_a_second_target_of_the_same_name_conflicts(api, database, seeded):
    body = {"name": "siem", "kind": "webhook", "url": "https://x.example/h", "secret": SECRET}
    assert api.post("/api/v1/targets", json=body, scopes=WRITE).status_code == 201
    again = api.post("/api/v1/targets", json=body, scopes=WRITE)
    assert again.status_code == 409 and count(database, Target) == 1


def test_dead_letters_are_listed_retried_and_a_target_owed_messages_is_kept(
    local_api,
    database,
    origin,
    seeded,
    receiver,
    deliverer,
):
    api = local_api
    lee, group = seeded
    target = api.post(
        "/api/v1/targets",
        json={
            "name": "hr",
            "kind": "webhook",
            "url": receiver.url,
            "secret": receiver.secret,
            "max_attempts": 2,
        },
        scopes=WRITE,
    ).json
    receiver.answer = 503
    with database.transaction() as session:
        Org(session, origin).join(lee, group)
    for _ in range(40):
        deliverer.deliver_once()
        if api.get(f"/api/v1/targets/{target['id']}", scopes=READ).json["dead"] == 2:
            break
    dead = api.get(f"/api/v1/targets/{target['id']}/messages?state=dead", scopes=READ).json
    assert [m["event_type"] for m in dead["items"]] == ["grant.created"] * 2
    assert all(m["attempts"] == 2 and "503" in m["last_error"] for m in dead["items"])
    assert all("maintenance" not in m["last_error"] for m in dead["items"])  # the answer's body
    findings = api.get("/api/v1/findings?kind=dead_letters&state=open", scopes=READ).json
    assert [f["subject_id"] for f in findings["items"]] == [str(target["id"])]

    refused = api.delete(f"/api/v1/targets/{target['id']}", scopes=WRITE)
    assert refused.status_code == 409 and "2 message(s)" in refused.json["detail"]

    receiver.answer = None
    retried = api.post(
        f"/api/v1/targets/{target['id']}/retry",
        json={"message_ids": [dead["items"][0]["id"]]},
        scopes=WRITE,
    )
    assert retried.json == {"retried": 1}
    deliverer.drain()
    assert api.get(f"/api/v1/targets/{target['id']}", scopes=READ).json["dead"] == 1
    assert api.post(f"/api/v1/targets/{target['id']}/retry", json={}, scopes=WRITE).json == {
        "retried": 1
    }
    deliverer.drain()
    assert len(receiver.unique()) == 2
    findings = api.get("/api/v1/findings?kind=dead_letters&state=open", scopes=READ).json
    assert findings["items"] == []

    gone = api.delete(f"/api/v1/targets/{target['id']}", scopes=WRITE)
    assert gone.status_code == 204 and count(database, Target) == 0


def test_deleting_with_discard_drops_what_is_owed_and_says_so_in_the_audit(
    api, database, origin, seeded
):
    lee, group = seeded
    body = {"name": "h", "kind": "webhook", "url": "https://x.example/h", "secret": SECRET}
    target = api.post("/api/v1/targets", json=body, scopes=WRITE).json
    with database.transaction() as session:
        Org(session, origin).join(lee, group)
    assert count(database, OutboxMessage) == 2
    answer = api.delete(f"/api/v1/targets/{target['id']}?discard_undelivered=true", scopes=WRITE)
    assert answer.status_code == 204 and count(database, OutboxMessage) == 0
    audit = api.get(
        f"/api/v1/audit?subject_type=target&subject_id={target['id']}", scopes=["audit:read"]
    ).json
    deleted = [e for e in audit["items"] if e["action"] == "target.deleted"]
    assert deleted[0]["before"]["discarded_messages"] == 2


def test_an_offboarding_shows_each_target_acknowledging(
    local_api,
    database,
    origin,
    seeded,
    receiver,
    deliverer,
):
    api = local_api
    lee, group = seeded
    api.post(
        "/api/v1/targets",
        json={"name": "hr", "kind": "webhook", "url": receiver.url, "secret": receiver.secret},
        scopes=WRITE,
    )
    with database.transaction() as session:
        Org(session, origin).join(lee, group)
    made = api.post(
        "/api/v1/offboardings",
        json={"employeeNumber": "E7", "reason": "left"},
        scopes=["offboarding:write"],
    ).json
    assert made["targets"] == [
        {
            "target_id": 1,
            "name": "hr",
            "delivered": 0,
            "pending": 3,
            "dead": 0,
            "acknowledged": False,
        }
    ]
    deliverer.drain()
    read = api.get(made["url"], scopes=["offboarding:write"]).json
    assert read["targets"][0]["acknowledged"] is True and read["targets"][0]["delivered"] == 3
