"""Mappings over HTTP: a dry run names exactly who would gain or lose what, and writes nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.entitlements.models import Grant, Mapping
from tests.org import Org, later

BASE = "/api/v1/mappings"


def snapshot(api) -> tuple:
    with api.database.reader() as session:
        grants = session.execute(
            select(Grant.user_id, Grant.connector_id, Grant.access_level, Grant.revoked_at)
        ).all()
        return (
            sorted(map(tuple, grants), key=str),
            session.scalar(select(func.count()).select_from(Mapping)),
            session.scalar(select(func.count()).select_from(AuditEvent)),
        )


def live(api) -> set[tuple[str, str]]:
    page = api.get("/api/v1/grants", query_string={"limit": 500}).json
    return {(g["user_name"], g["connector"], g["access_level"]) for g in page["items"]}


def people(api, origin):
    with api.database.transaction() as session:
        org = Org(session, origin)
        ada, bob, cy = org.user("ada"), org.user("bob"), org.user("cy")
        platform, data = org.group("eng-platform"), org.group("data")
        org.join(ada, platform)
        org.join(bob, platform)
        org.join(cy, data)
        org.join(bob, data)
        org.connector(
            "github",
            actions=(("search", "read", "always_allow"), ("merge", "write", "needs_approval")),
        )
        org.connector("wiki", capability="read")
        org.connector("dormant", enabled=False)
    return {"platform": str(platform.id), "data": str(data.id)}


def shape(changes: list[dict]) -> list[tuple]:
    return [(c["user_name"], c["connector"], c["access_level"]) for c in changes]


def test_dry_run_create_equals_what_the_commit_then_does(api, origin):
    groups = people(api, origin)
    body = {"group_id": groups["platform"], "connector": "github", "access_level": "read_write"}
    before = snapshot(api)
    preview = api.post(BASE, json=body, query_string={"dry_run": "true"})
    assert preview.status_code == 200, preview.json
    assert preview.json["dry_run"] is True and preview.json["mapping"] is None
    assert shape(preview.json["gain"]) == [
        ("ada", "github", "read_write"),
        ("bob", "github", "read_write"),
    ]
    assert preview.json["lose"] == [] and preview.json["change"] == []
    assert snapshot(api) == before  # nothing written, not even an audit event

    assert {r for c in preview.json["gain"] for r in c["reasons"]} == {"mapping:new"}

    committed = api.post(BASE, json=body)
    assert committed.status_code == 201, committed.json
    assert committed.json["dry_run"] is False
    new = f"mapping:{committed.json['mapping']['id']}"
    for key in ("gain", "lose", "change"):
        done = [
            {**c, "reasons": ["mapping:new" if r == new else r for r in c["reasons"]]}
            for c in committed.json[key]
        ]
        assert done == preview.json[key]
    assert live(api) == {("ada", "github", "read_write"), ("bob", "github", "read_write")}


def test_dry_run_update_and_delete_equal_their_commits(api, origin):
    groups = people(api, origin)
    one = {"group_id": groups["platform"], "connector": "github", "access_level": "read_write"}
    two = {"group_id": groups["data"], "connector": "github", "access_level": "read"}
    first = api.post(BASE, json=one).json["mapping"]
    api.post(BASE, json=two)
    url = f"{BASE}/{first['id']}"

    before = snapshot(api)
    preview = api.patch(url, json={"access_level": "read"}, query_string={"dry_run": "1"})
    assert preview.status_code == 200, preview.json
    assert shape(preview.json["change"]) == [("ada", "github", "read"), ("bob", "github", "read")]
    assert snapshot(api) == before
    committed = api.patch(url, json={"access_level": "read"})
    assert committed.status_code == 200
    assert committed.json["change"] == preview.json["change"]

    before = snapshot(api)
    preview = api.delete(url, query_string={"dry_run": "true"})
    # bob keeps github through "data"; ada loses it.
    assert shape(preview.json["lose"]) == [("ada", "github", "read")]
    assert snapshot(api) == before
    committed = api.delete(url)
    assert committed.status_code == 200
    assert committed.json["lose"] == preview.json["lose"]
    assert live(api) == {("bob", "github", "read"), ("cy", "github", "read")}
    assert api.get(url).status_code == 404


def test_mapping_etag_guards_against_lost_updates(api, origin):
    groups = people(api, origin)
    body = {"group_id": groups["platform"], "connector": "wiki", "access_level": "read"}
    created = api.post(BASE, json=body)
    etag = created.headers["ETag"]
    url = f"{BASE}/{created.json['mapping']['id']}"
    assert api.get(url).headers["ETag"] == etag
    ok = api.patch(url, json={"description": "docs"}, headers={"If-Match": etag})
    assert ok.status_code == 200
    stale = api.patch(url, json={"description": "x"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert api.delete(url, headers={"If-Match": etag}).status_code == 412
    assert api.get(url).json["description"] == "docs"


def test_bad_mappings_are_refused_naming_the_field_and_nothing_is_written(api, origin):
    groups = people(api, origin)
    good = {"group_id": groups["platform"], "connector": "github", "access_level": "read"}
    before = snapshot(api)
    cases = [
        ({**good, "connector": "nowhere"}, "connector"),
        ({**good, "connector": "dormant"}, "connector"),
        ({**good, "group_id": "00000000-0000-0000-0000-000000000000"}, "group_id"),
        ({**good, "access_level": "root"}, "access_level"),
        ({**good, "policies": {"merge": "sometimes"}}, "policies.merge"),
        ({**good, "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({**good, "extra": 1}, "extra"),
        ({**good, "group_id": 7}, "group_id"),
    ]
    for body, field in cases:
        response = api.post(BASE, json=body)
        assert response.status_code == 422, (body, response.json)
        assert response.mimetype == "application/problem+json"
        assert field in {e["field"] for e in response.json.get("errors", [])}, response.json
    for body, words in [
        ({**good, "access_level": "interactive"}, "capability"),
        ({**good, "actions": ["deploy"]}, "no action"),
    ]:
        response = api.post(BASE, json=body)
        assert response.status_code == 422 and words in response.json["detail"]
    assert snapshot(api) == before


def test_mappings_list_filters(api, origin):
    groups = people(api, origin)
    for group, connector in [("platform", "github"), ("platform", "wiki"), ("data", "wiki")]:
        body = {"group_id": groups[group], "connector": connector, "access_level": "read"}
        assert api.post(BASE, json={**body, "expires_at": later(3).isoformat()}).status_code == 201
    by_group = api.get(BASE, query_string={"group_id": groups["platform"]}).json["items"]
    assert sorted(m["connector"] for m in by_group) == ["github", "wiki"]
    by_connector = api.get(BASE, query_string={"connector": "wiki"}).json["items"]
    assert sorted(m["group"] for m in by_connector) == ["data", "eng-platform"]
    first = api.get(BASE, query_string={"limit": 2}).json
    rest = api.get(BASE, query_string={"cursor": first["next_cursor"]}).json
    assert len(first["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
