"""The offboarding API: 202 and revoked at once, idempotent, 404/409 with nothing recorded."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from jobs.runner import run_job
from provisioning.database import utcnow
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.offboarding.models import Offboarding
from provisioning.settings import load
from tests.org import Org

HR = ["offboarding:write"]


def seed(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        lee = org.user("lee@example.com", employee_number="E7")
        group = org.group()
        create_mapping(session, origin, group, org.connector("github"), "read")
        org.join(lee, group)
        org.user("twin1@example.com", employee_number="E9")
        org.user("twin2@example.com", employee_number="E9")
    return lee


def live(database) -> int:
    with database.reader() as session:
        return session.scalar(select(func.count(Grant.id)).where(Grant.revoked_at.is_(None)))


def test_offboarding_is_immediate_idempotent_and_readable(api, database, origin):
    lee = seed(database, origin)
    body = {"employeeNumber": "E7", "reason": "resigned", "ticket": "HR-1"}
    first = api.post(
        "/api/v1/offboardings", json=body, scopes=HR, headers={"Idempotency-Key": "k1"}
    )
    assert first.status_code == 202, first.json
    assert first.headers["Location"] == first.json["url"]
    assert first.json["state"] == "done" and first.json["user_id"] == str(lee.id)
    assert [r["connector"] for r in first.json["revoked"]] == ["github"]
    assert live(database) == 0
    again = api.post(
        "/api/v1/offboardings", json=body, scopes=HR, headers={"Idempotency-Key": "k1"}
    )
    assert again.json["id"] == first.json["id"]
    assert "Idempotency-Key seen before" in again.json["notes"][0]
    with database.reader() as session:
        assert session.scalar(select(func.count(Offboarding.id))) == 1
    read = api.get(first.json["url"], scopes=HR)
    assert read.status_code == 200 and read.json["revoked"] == first.json["revoked"]
    assert read.json["targets"] == []  # no target configured: nothing to acknowledge


def test_unknown_ambiguous_and_bad_requests_record_nothing(api, database, origin):
    seed(database, origin)
    unknown = api.post(
        "/api/v1/offboardings", json={"userName": "ghost@x", "reason": "r"}, scopes=HR
    )
    assert unknown.status_code == 404
    ambiguous = api.post(
        "/api/v1/offboardings", json={"employeeNumber": "E9", "reason": "r"}, scopes=HR
    )
    assert ambiguous.status_code == 409
    assert sorted(c["userName"] for c in ambiguous.json["candidates"]) == [
        "twin1@example.com",
        "twin2@example.com",
    ]
    two_ids = api.post(
        "/api/v1/offboardings",
        json={"employeeNumber": "E7", "userName": "lee@example.com", "reason": "r"},
        scopes=HR,
    )
    assert two_ids.status_code == 422
    assert (
        api.post("/api/v1/offboardings", json={"employeeNumber": "E7"}, scopes=HR).status_code
        == 422
    )
    assert (
        api.post(
            "/api/v1/offboardings",
            json={"employeeNumber": "E7", "reason": "r"},
            scopes=["admin:write"],
        ).status_code
        == 403
    )
    with database.reader() as session:
        assert session.scalar(select(func.count(Offboarding.id))) == 0
    assert live(database) == 1


def test_future_dated_past_dated_cancel_and_the_job(api, database, origin):
    seed(database, origin)
    later = (utcnow() + dt.timedelta(days=1)).isoformat()
    scheduled = api.post(
        "/api/v1/offboardings",
        json={"employeeNumber": "E7", "reason": "contract ends", "effective_at": later},
        scopes=HR,
    )
    assert scheduled.json["state"] == "scheduled" and live(database) == 1
    cancel = f"{scheduled.json['url']}/cancel"
    assert api.post(cancel, json={"reason": "extended"}, scopes=HR).json["state"] == "cancelled"
    assert api.post(cancel, json={"reason": "again"}, scopes=HR).status_code == 409
    past = (utcnow() - dt.timedelta(days=1)).isoformat()
    now = api.post(
        "/api/v1/offboardings",
        json={"employeeNumber": "E7", "reason": "left", "effective_at": past},
        scopes=HR,
    )
    assert now.json["state"] == "done"
    assert "carried out now" in now.json["notes"][0]
    run = run_job(database, load(database_url=database.url), "offboardings")
    assert run.outcome == "succeeded" and run.counts == {"executed": 0, "revoked": 0}


def test_reinstatement_is_an_admin_action(api, database, origin):
    lee = seed(database, origin)
    api.post("/api/v1/offboardings", json={"employeeNumber": "E7", "reason": "left"}, scopes=HR)
    path = f"/api/v1/users/{lee.id}/reinstate"
    assert api.post(path, json={"reason": "rehired"}, scopes=HR).status_code == 403
    done = api.post(path, json={"reason": "rehired"}, scopes=["admin:write"])
    assert done.status_code == 200 and len(done.json["gain"]) == 1
    assert api.post(path, json={"reason": "again"}, scopes=["admin:write"]).status_code == 409
    assert live(database) == 1
