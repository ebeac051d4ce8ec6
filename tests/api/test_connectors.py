"""Connectors and actions over HTTP: CRUD, guards on enable, ETags, and bad input refused."""

from __future__ import annotations

from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.connectors.models import Action, Connector
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from tests.org import Org

BASE = "/api/v1/connectors"
GITHUB = {
    "slug": "github",
    "name": "GitHub",
    "kind": "remote",
    "capability": "read_write",
    "publisher": "directory",
    "security_review": "approved",
    "interfaces": ["web", "desktop"],
    "enabled": True,
}


def counts(api) -> tuple[int, int, int]:
    with api.database.reader() as session:
        return (
            session.scalar(select(func.count()).select_from(Connector)),
            session.scalar(select(func.count()).select_from(Action)),
            session.scalar(select(func.count()).select_from(AuditEvent)),
        )


def test_create_read_update_delete(api):
    created = api.post(BASE, json=GITHUB)
    assert created.status_code == 201, created.json
    assert created.headers["Location"] == f"{BASE}/github"
    assert created.json["governance_problems"] == []
    etag = created.headers["ETag"]
    got = api.get(f"{BASE}/github")
    assert got.json == created.json and got.headers["ETag"] == etag

    changed = api.patch(f"{BASE}/github", json={"owner": "platform"}, headers={"If-Match": etag})
    assert changed.status_code == 200, changed.json
    assert changed.json["owner"] == "platform"
    assert changed.headers["ETag"] != etag

    assert api.delete(f"{BASE}/github").status_code == 204
    assert api.get(f"{BASE}/github").status_code == 404
    with api.database.reader() as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["connector.created", "connector.updated", "connector.deleted"]


def test_a_lost_update_is_412_and_changes_nothing(api):
    etag = api.post(BASE, json=GITHUB).headers["ETag"]
    assert (
        api.patch(f"{BASE}/github", json={"name": "A"}, headers={"If-Match": etag}).status_code
        == 200
    )
    before = counts(api)
    stale = api.patch(f"{BASE}/github", json={"name": "B"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.mimetype == "application/problem+json"
    assert api.get(f"{BASE}/github").json["name"] == "A"
    assert counts(api) == before
    assert api.delete(f"{BASE}/github", headers={"If-Match": etag}).status_code == 412


def test_enable_enforces_the_governance_guards(api):
    vendor = {**GITHUB, "slug": "vendor", "publisher": "third_party", "security_review": "pending"}
    refused = api.post(BASE, json=vendor)
    assert refused.status_code == 422
    assert "security review" in refused.json["detail"]
    assert api.post(BASE, json={**vendor, "enabled": False}).status_code == 201
    before = counts(api)
    blocked = api.post(f"{BASE}/vendor/enable")
    assert blocked.status_code == 409
    assert "approved security review" in blocked.json["detail"]
    assert counts(api) == before
    assert api.patch(f"{BASE}/vendor", json={"security_review": "approved"}).status_code == 200
    enabled = api.post(f"{BASE}/vendor/enable")
    assert enabled.status_code == 200 and enabled.json["enabled"] is True

    regulated = {**GITHUB, "slug": "ledger", "data_classification": "regulated", "enabled": False}
    assert api.post(BASE, json=regulated).status_code == 201
    assert api.post(f"{BASE}/ledger/enable").status_code == 409
    desktop = {**GITHUB, "slug": "files", "kind": "desktop_extension", "interfaces": ["web"]}
    refused = api.post(BASE, json=desktop)
    assert refused.status_code == 422 and "desktop" in refused.json["detail"]


def test_disable_revokes_every_grant(api, origin):
    with api.database.transaction() as session:
        org = Org(session, origin)
        ada, group = org.user(), org.group()
        org.join(ada, group)
        connector = org.connector("wiki")
        create_mapping(session, origin, group, connector, "read")
    response = api.post(f"{BASE}/wiki/disable")
    assert response.status_code == 200 and response.json["enabled"] is False
    with api.database.reader() as session:
        grant = session.scalars(select(Grant)).one()
        assert grant.revoked_at is not None and grant.revoke_reason == "connector disabled"
    conflict = api.delete(f"{BASE}/wiki")
    assert conflict.status_code == 409 and "mappings" in conflict.json["detail"]


def test_lists_are_paged_by_cursor_and_filtered(api):
    for i in range(5):
        body = {**GITHUB, "slug": f"c{i}", "enabled": i % 2 == 0}
        assert api.post(BASE, json=body).status_code == 201
    seen, cursor = [], None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get(BASE, query_string=query).json
        seen += [c["slug"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["c0", "c1", "c2", "c3", "c4"]
    enabled = api.get(BASE, query_string={"enabled": "true"}).json["items"]
    assert [c["slug"] for c in enabled] == ["c0", "c2", "c4"]
    bad = api.get(BASE, query_string={"cursor": "nonsense"})
    assert bad.status_code == 400 and bad.json["type"].endswith(":invalid-cursor")


def test_bad_input_is_problem_json_naming_each_field_and_writes_nothing(api):
    before = counts(api)
    cases = [
        ({**GITHUB, "kind": "satellite"}, {"kind"}),
        ({**GITHUB, "colour": "blue"}, {"colour"}),
        ({**GITHUB, "enabled": "maybe", "interfaces": "web"}, {"enabled", "interfaces"}),
        ({k: v for k, v in GITHUB.items() if k != "slug"}, {"slug"}),
        ({**GITHUB, "slug": "Not A Slug"}, {"slug"}),
        ({**GITHUB, "name": "x\x00y"}, {"name"}),
    ]
    for body, fields in cases:
        response = api.post(BASE, json=body)
        assert response.status_code == 422, body
        assert response.mimetype == "application/problem+json"
        assert response.json["type"] == "urn:provisioning:problem:invalid-request"
        assert {e["field"] for e in response.json["errors"]} == fields, response.json
    not_json = api.post(BASE, data="{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and "not JSON" in not_json.json["detail"]
    too_big = api.post(BASE, json={**GITHUB, "name": "x" * 2_000_000})
    assert too_big.status_code == 413
    assert too_big.mimetype == "application/problem+json"
    null_name = api.post(BASE, json=GITHUB)
    assert null_name.status_code == 201
    refused = api.patch(f"{BASE}/github", json={"name": None})
    assert refused.status_code == 422 and refused.json["errors"][0]["field"] == "name"
    assert counts(api)[0] == before[0] + 1


def test_actions_crud_and_guards(api, origin):
    api.post(BASE, json={**GITHUB, "capability": "read"})
    created = api.post(f"{BASE}/github/actions", json={"name": "search", "kind": "read"})
    assert created.status_code == 201
    assert created.json["org_policy"] == "needs_approval"
    duplicate = api.post(f"{BASE}/github/actions", json={"name": "search", "kind": "read"})
    assert duplicate.status_code == 409
    beyond = api.post(f"{BASE}/github/actions", json={"name": "merge", "kind": "write"})
    assert beyond.status_code == 422 and "capability" in beyond.json["detail"]
    changed = api.patch(f"{BASE}/github/actions/search", json={"org_policy": "always_allow"})
    assert changed.json["org_policy"] == "always_allow"
    listed = api.get(f"{BASE}/github/actions").json["items"]
    assert [a["name"] for a in listed] == ["search"]
    assert api.get(f"{BASE}/github/actions/nope").status_code == 404
    assert api.delete(f"{BASE}/github/actions/search").status_code == 204
    assert api.get(f"{BASE}/github/actions").json["items"] == []
    with api.database.reader() as session:
        actions = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.subject_type == "action")
            .order_by(AuditEvent.id)
        ).all()
    assert actions == ["action.created", "action.updated", "action.deleted"]


def test_an_action_named_by_a_mapping_cannot_be_deleted(api, origin):
    with api.database.transaction() as session:
        org = Org(session, origin)
        group = org.group()
        connector = org.connector("github", actions=(("search", "read", "always_allow"),))
        create_mapping(session, origin, group, connector, "read", actions=["search"])
    response = api.delete(f"{BASE}/github/actions/search")
    assert response.status_code == 409 and "mapping" in response.json["detail"]
