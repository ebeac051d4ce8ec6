"""Users, groups, grants, exceptions and the audit log over HTTP."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, select, update

from provisioning.audit.log import verify
from provisioning.audit.models import AuditEvent
from provisioning.database import utcnow
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant, ManualException
from tests.org import Org, later

ACTIONS = (("search", "read", "always_allow"), ("merge", "write", "needs_approval"))


def seed(api, origin):
    with api.database.transaction() as session:
        org = Org(session, origin)
        ada = org.user("ada@example.com", display_name="Ada Lovelace", department="eng")
        bob = org.user("bob@example.com", display_name="Bob", department="sales")
        cy = org.user("cy@example.com", active=False)
        eng = org.group("eng")
        for user in (ada, bob):
            org.join(user, eng)
        github = org.connector("github", actions=ACTIONS, interfaces=["web", "desktop"])
        org.connector("wiki", capability="read")
        mapping, _ = create_mapping(
            session, origin, eng, github, "read_write", policies={"search": "needs_approval"}
        )
    return {"ada": ada, "bob": bob, "cy": cy, "eng": eng, "mapping": mapping}


def test_users_list_search_and_filter(api, origin):
    seed(api, origin)
    everyone = api.get("/api/v1/users").json["items"]
    assert [u["user_name"] for u in everyone] == [
        "ada@example.com",
        "bob@example.com",
        "cy@example.com",
    ]
    assert everyone[2]["state"] == "deactivated"
    found = api.get("/api/v1/users", query_string={"q": "lovel"}).json["items"]
    assert [u["user_name"] for u in found] == ["ada@example.com"]
    assert api.get("/api/v1/users", query_string={"q": "%"}).json["items"] == []
    active = api.get("/api/v1/users", query_string={"active": "false"}).json["items"]
    assert [u["user_name"] for u in active] == ["cy@example.com"]
    sales = api.get("/api/v1/users", query_string={"department": "sales"}).json["items"]
    assert [u["user_name"] for u in sales] == ["bob@example.com"]
    first = api.get("/api/v1/users", query_string={"limit": 2}).json
    rest = api.get("/api/v1/users", query_string={"cursor": first["next_cursor"]}).json
    assert [u["user_name"] for u in rest["items"]] == ["cy@example.com"]
    assert api.get("/api/v1/users/00000000-0000-0000-0000-000000000000").status_code == 404
    assert api.get("/api/v1/users/not-a-uuid").status_code == 422


def test_user_access_explains_every_grant(api, origin):
    org = seed(api, origin)
    response = api.get(f"/api/v1/users/{org['ada'].id}/access")
    assert response.status_code == 200, response.json
    (grant,) = response.json["grants"]
    assert grant["connector"] == "github" and grant["access_level"] == "read_write"
    assert grant["sources"] == [
        {
            "source": f"mapping:{org['mapping'].id}",
            "group": "eng",
            "expires_at": None,
            "justification": None,
        }
    ]
    policies = {a["name"]: a["effective"] for a in grant["actions"]}
    assert policies == {
        "merge": {"desktop": "needs_approval", "web": "needs_approval"},
        "search": {"desktop": "needs_approval", "web": "needs_approval"},  # tightened
    }


def test_groups_and_members(api, origin):
    org = seed(api, origin)
    groups = api.get("/api/v1/groups").json["items"]
    assert [(g["display_name"], g["members"]) for g in groups] == [("eng", 2)]
    members = api.get(f"/api/v1/groups/{org['eng'].id}/members").json["items"]
    assert [m["user_name"] for m in members] == ["ada@example.com", "bob@example.com"]
    assert api.get("/api/v1/groups", query_string={"q": "nope"}).json["items"] == []


def test_grants_filter_by_user_connector_state_and_staleness(api, origin):
    org = seed(api, origin)
    grants = api.get("/api/v1/grants").json["items"]
    assert sorted(g["user_name"] for g in grants) == ["ada@example.com", "bob@example.com"]
    mine = api.get("/api/v1/grants", query_string={"user_id": str(org["ada"].id)}).json["items"]
    assert [g["connector"] for g in mine] == ["github"]
    assert api.get("/api/v1/grants", query_string={"connector": "wiki"}).json["items"] == []
    with api.database.transaction() as session:
        session.execute(
            update(Grant)
            .where(Grant.user_id == org["ada"].id)
            .values(granted_at=utcnow() - dt.timedelta(days=200))
        )
    stale = api.get("/api/v1/grants", query_string={"unused_days": 90}).json["items"]
    assert [g["user_name"] for g in stale] == ["ada@example.com"]
    assert api.get("/api/v1/grants", query_string={"state": "revoked"}).json["items"] == []
    assert api.get("/api/v1/grants", query_string={"state": "gone"}).status_code == 422


def test_exception_needs_justification_and_future_expiry_then_revokes(api, origin):
    org = seed(api, origin)
    body = {
        "user_id": str(org["cy"].id),
        "connector": "wiki",
        "access_level": "read",
        "justification": "audit support",
        "expires_at": later(7).isoformat(),
    }
    for broken, field in [
        ({k: v for k, v in body.items() if k != "expires_at"}, "expires_at"),
        ({k: v for k, v in body.items() if k != "justification"}, "justification"),
        ({**body, "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({**body, "connector": "nope"}, "connector"),
    ]:
        response = api.post("/api/v1/exceptions", json=broken)
        assert response.status_code == 422, broken
        assert field in {e["field"] for e in response.json["errors"]}
    with api.database.reader() as session:
        assert session.scalar(select(func.count()).select_from(ManualException)) == 0

    bob_body = {**body, "user_id": str(org["bob"].id)}
    bob_body["connector"] = "wiki"
    created = api.post("/api/v1/exceptions", json=bob_body)
    assert created.status_code == 201, created.json
    assert [g["user_name"] for g in created.json["gain"]] == ["bob@example.com"]
    exception_id = created.json["exception"]["id"]
    revoked = api.post(f"/api/v1/exceptions/{exception_id}/revoke", json={"reason": "done"})
    assert revoked.status_code == 200, revoked.json
    assert [g["connector"] for g in revoked.json["lose"]] == ["wiki"]
    again = api.post(f"/api/v1/exceptions/{exception_id}/revoke", json={})
    assert again.status_code == 409
    assert api.post("/api/v1/exceptions/999/revoke", json={}).status_code == 404


def test_audit_query_and_json_lines_export(api, origin):
    seed(api, origin)
    api.post("/api/v1/connectors/wiki/disable")
    everything = api.get("/api/v1/audit", query_string={"limit": 500}).json["items"]
    assert everything and [e["id"] for e in everything] == sorted(e["id"] for e in everything)
    mine = api.get("/api/v1/audit", query_string={"actor": "ada@example.com"}).json["items"]
    assert [e["action"] for e in mine] == ["connector.updated"]
    by_subject = api.get(
        "/api/v1/audit", query_string={"subject_type": "connector", "subject_id": "wiki"}
    ).json["items"]
    assert [e["action"] for e in by_subject] == ["connector.created", "connector.updated"]
    future = api.get("/api/v1/audit", query_string={"since": later(1).isoformat()}).json
    assert future["items"] == []
    assert api.get("/api/v1/audit", query_string={"since": "yesterday"}).status_code == 422

    export = api.get("/api/v1/audit/export", scopes=["audit:read"])
    assert export.status_code == 200 and export.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in export.get_data(as_text=True).splitlines()]
    assert [e["id"] for e in lines] == [e["id"] for e in everything]
    assert lines[-1]["hash"] == everything[-1]["hash"]
    with api.database.reader() as session:
        assert verify(session).intact
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == len(lines)


def test_search_compares_folded_text_and_refuses_control_characters(api, origin):
    """The admin search and the SCIM filters use the same folded keys (provisioning/text.py)."""
    with api.database.transaction() as session:
        org = Org(session, origin)
        org.user("strasse@example.com", display_name="Jörg STRASSE", email="J.S@Example.COM")
        org.user("odysseus@example.com", display_name="ΟΔΥΣΣΕΥΣ")
        org.group("ÄRZTE")
        org.group("Pflege")

    def users(q):
        response = api.get("/api/v1/users", query_string={"q": q})
        assert response.status_code == 200, response.json
        return [u["user_name"] for u in response.json["items"]]

    assert users("straße") == ["strasse@example.com"]
    assert users("JÖRG") == ["strasse@example.com"]
    assert users("j.s@example.com") == ["strasse@example.com"]
    assert users("οδυσσευς") == ["odysseus@example.com"]  # final sigma
    groups = api.get("/api/v1/groups", query_string={"q": "ärzte"}).json["items"]
    assert [g["display_name"] for g in groups] == ["ÄRZTE"]
    for bad in ("a\x00b", "\x1b[31m", "\x85"):
        # The admin API's answer to any field it refuses: 422 problem+json naming it.
        response = api.get("/api/v1/users", query_string={"q": bad})
        assert response.status_code == 422, response.json
        assert response.mimetype == "application/problem+json"
        (error,) = response.json["errors"]
        assert error["field"] == "q"
        assert "control character" in error["message"] or "NUL" in error["message"], error
