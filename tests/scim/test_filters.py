"""Filters compiled to SQL, over HTTP: columns, JSON attributes, value paths, relations, sorting."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from scim2_models import ScimFilter
from sqlalchemy import select

from provisioning.entitlements.mappings import create_mapping
from provisioning.identity.models import Group
from tests.org import Org
from tests.scim.conftest import ENTERPRISE, GROUP_SCHEMA, okta_user
from tests.scim.test_okta import ADMIN


@pytest.fixture
def org(scim):
    """Four people, two groups, one mapped to a connector; returns name -> SCIM id."""
    people = {
        "alice": okta_user(
            "Alice.Smith@Example.com",
            externalId="00uAlice",
            title="Boss",
            emails=[
                {"value": "alice@home.example", "type": "home"},
                {"value": "Alice.Smith@Example.com", "type": "work", "primary": True},
            ],
            **{ENTERPRISE: {"employeeNumber": "100", "department": "R&D"}},
        ),
        "bob": okta_user("bob_%@example.com", externalId="00uBob", active=False),
        "carol": okta_user("carol@example.org", externalId="00ucarol", title=""),
        "dave": okta_user("dave@example.org", externalId="00uDave", nickName="D"),
    }
    ids = {}
    for key, body in people.items():
        if key == "alice":
            body["schemas"] = [*body["schemas"], ENTERPRISE]
        response = scim.post("/Users", body)
        assert response.status_code == 201, response.get_json()
        ids[key] = response.get_json()["id"]
    for name, members in (("eng", ["alice", "bob"]), ("sales", ["carol"])):
        group = scim.post(
            "/Groups",
            {
                "schemas": [GROUP_SCHEMA],
                "displayName": name,
                "externalId": f"00g{name}",
                "members": [{"value": ids[m]} for m in members],
            },
        ).get_json()
        ids[name] = group["id"]
    with scim.database.transaction() as session:
        connector = Org(session, ADMIN).connector("github")
        eng = session.scalar(select(Group).where(Group.id == uuid.UUID(ids["eng"])))
        create_mapping(session, ADMIN, eng, connector, "read")
    return ids


def found(scim, endpoint: str, scim_filter: str, **params) -> list[str]:
    response = scim.get(endpoint, query_string={"filter": scim_filter, **params})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["totalResults"] == len(body["Resources"])
    return sorted(r["id"] for r in body["Resources"])


USER_CASES = [
    ('userName eq "alice.smith@example.COM"', ["alice"]),
    ('userName sw "BOB_%"', ["bob"]),
    ('userName sw "bob_"', ["bob"]),
    ('userName sw "bo%"', []),
    ('userName ew ".org"', ["carol", "dave"]),
    ('userName co "_%@"', ["bob"]),
    ('userName gt "c"', ["carol", "dave"]),
    ('externalId eq "00uAlice"', ["alice"]),
    ('externalId eq "00ualice"', []),
    ('externalId sw "00uD"', ["dave"]),
    ('externalId co "ob"', ["bob"]),
    ('displayName eq "ALICE SMITH"', ["alice"]),
    ("active eq false", ["bob"]),
    ("not (active eq false)", ["alice", "carol", "dave"]),
    ('title eq "boss"', ["alice"]),
    ("title pr", ["alice"]),
    ("title eq null", ["bob", "dave"]),
    ('title ne "boss"', ["bob", "carol", "dave"]),
    ('nickName eq "d" or title eq "Boss"', ["alice", "dave"]),
    ('emails.value eq "ALICE@home.example"', ["alice"]),
    ('emails eq "alice@home.example"', ["alice"]),
    ('emails[type eq "work" and value co "@example.org"]', ["carol", "dave"]),
    ('emails[type eq "home" and primary eq true]', []),
    ('emails[not (type eq "work")]', ["alice"]),
    ("emails.primary eq true", ["alice", "bob", "carol", "dave"]),
    ('emails ne "alice@home.example"', ["bob", "carol", "dave"]),
    (f'{ENTERPRISE}:employeeNumber eq "100"', ["alice"]),
    (f'{ENTERPRISE}:department co "&"', ["alice"]),
    ('name.familyName eq "SMITH"', ["alice"]),
    ("name pr", ["alice", "bob", "carol", "dave"]),
    ('groups.value eq "{eng}"', ["alice", "bob"]),
    ('groups[display eq "SALES"]', ["carol"]),
    ('entitlements.value eq "github"', ["alice"]),
    ('meta.created gt "2000-01-01T00:00:00Z"', ["alice", "bob", "carol", "dave"]),
    ('meta.lastModified lt "2000-01-01T00:00:00Z"', []),
    ('id eq "{carol}"', ["carol"]),
    ('id ne "{carol}"', ["alice", "bob", "dave"]),
    ('userName sw "a" and (active eq true or title pr)', ["alice"]),
]


def test_user_filters(scim, org):
    """Each filter of USER_CASES keeps exactly the expected users (one organisation, many
    filters: the setup is paid once)."""
    wrong = []
    for scim_filter, expected in USER_CASES:
        text = scim_filter.format(**org)
        got = found(scim, "/Users", text)
        if got != sorted(org[e] for e in expected):
            names = {v: k for k, v in org.items()}
            wrong.append(f"{text}: got {sorted(names[i] for i in got)}, expected {expected}")
    assert not wrong, "\n".join(wrong)


GROUP_CASES = [
    ('displayName eq "ENG"', ["eng"]),
    ('externalId eq "00gsales"', ["sales"]),
    ('members.value eq "{alice}"', ["eng"]),
    ('members[value eq "{carol}"]', ["sales"]),
    ('members eq "{dave}"', []),
    ('members ne "{alice}"', ["sales"]),
    ("members pr", ["eng", "sales"]),
    ('displayName sw "s" or members.value eq "{bob}"', ["eng", "sales"]),
]


def test_group_filters(scim, org):
    wrong = []
    for scim_filter, expected in GROUP_CASES:
        text = scim_filter.format(**org)
        if found(scim, "/Groups", text) != sorted(org[e] for e in expected):
            wrong.append(text)
    assert not wrong, wrong


def test_filters_agree_with_the_reference_evaluator(scim, org):
    """Every filter above keeps exactly what scim2-models' ScimFilter.match keeps."""
    everyone = scim.get("/Users?count=1000").get_json()["Resources"]
    from scim.resources import UserResource

    resources = [UserResource.model_validate(u) for u in everyone]
    for scim_filter, _ in USER_CASES:
        text = scim_filter.format(**org)
        expected = sorted(r.id for r in resources if ScimFilter[UserResource](text).match(r))
        assert found(scim, "/Users", text) == expected, text


def test_sorting_and_paging(scim, org):
    def names(**params):
        body = scim.get("/Users", query_string=params).get_json()
        return [u["userName"].split("@")[0].lower() for u in body["Resources"]]

    assert names(sortBy="userName") == ["alice.smith", "bob_%", "carol", "dave"]
    assert names(sortBy="userName", sortOrder="descending") == [
        "dave",
        "carol",
        "bob_%",
        "alice.smith",
    ]
    titles = names(sortBy="title")
    assert titles[:2] == ["carol", "alice.smith"]  # "" before "Boss", missing values last
    assert names(sortBy="userName", startIndex=2, count=2) == ["bob_%", "carol"]
    assert names(sortBy="userName", startIndex=9) == []
    assert names(sortBy=f"{ENTERPRISE}:employeeNumber")[0] == "alice.smith"


def test_last_modified_filter_follows_changes(scim, org):
    mark = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    scim.patch(f"/Users/{org['dave']}", [{"op": "replace", "path": "title", "value": "CTO"}])
    assert found(scim, "/Users", f'meta.lastModified gt "{mark}"') == [org["dave"]]


def test_cursor_paging_over_http(scim, org):
    """RFC 9865: follow nextCursor to the end, then previousCursor back; every user once."""
    seen: list[str] = []
    pages = []
    params = {"cursor": "", "count": 3, "sortBy": "userName"}
    while True:
        body = scim.get("/Users", query_string=params).get_json()
        assert "startIndex" not in body
        pages.append(body)
        seen += [u["userName"] for u in body["Resources"]]
        if "nextCursor" not in body:
            break
        params = {"cursor": body["nextCursor"], "count": 3, "sortBy": "userName"}
    assert [len(p["Resources"]) for p in pages] == [3, 1]
    assert [s.split("@")[0].lower() for s in seen] == ["alice.smith", "bob_%", "carol", "dave"]
    back = scim.get(
        "/Users",
        query_string={"cursor": pages[1]["previousCursor"], "count": 3, "sortBy": "userName"},
    ).get_json()
    assert [u["id"] for u in back["Resources"]] == [u["id"] for u in pages[0]["Resources"]]
    # A cursor serves only its own query and count.
    other = scim.get("/Users", query_string={"cursor": pages[0]["nextCursor"], "count": 2})
    assert other.status_code == 400
    assert other.get_json()["scimType"] in ("invalidCursor", "invalidCount")
    forged = scim.get("/Users", query_string={"cursor": "bm90IGEgY3Vyc29y", "count": 3})
    assert forged.status_code == 400 and forged.get_json()["scimType"] == "invalidCursor"


@pytest.mark.parametrize("sort_by", ["id", "active", "meta.created", "externalId"])
@pytest.mark.parametrize("sort_order", ["ascending", "descending"])
def test_cursor_pages_by_every_kind_of_sort_value(scim, org, sort_by, sort_order):
    """Cursors keep a uuid, boolean, dateTime or string sort value: the walk forward and
    back gives the index order, each user once."""
    params = {"sortBy": sort_by, "sortOrder": sort_order}
    everyone = scim.get("/Users", query_string={**params, "count": 100}).get_json()
    expected = [u["id"] for u in everyone["Resources"]]
    pages = []
    cursor = ""
    while cursor is not None:
        response = scim.get("/Users", query_string={**params, "cursor": cursor, "count": 1})
        assert response.status_code == 200, response.get_json()
        pages.append(response.get_json())
        cursor = pages[-1].get("nextCursor")
    assert [u["id"] for p in pages for u in p["Resources"]] == expected
    back = pages[-1]
    seen = [u["id"] for u in back["Resources"]]
    while "previousCursor" in back:
        query = {**params, "cursor": back["previousCursor"], "count": 1}
        back = scim.get("/Users", query_string=query).get_json()
        seen = [u["id"] for u in back["Resources"]] + seen
    assert seen == expected


@pytest.mark.parametrize("codepoint_order", [True, False])
def test_string_order_with_and_without_a_code_point_collation(scim, org, codepoint_order):
    """On a PostgreSQL whose collation is not C, comparisons and sorts use COLLATE "C"."""
    storage = scim.client.application.extensions["scim"]["scim"].storage
    storage._codepoint = codepoint_order
    body = scim.get("/Users", query_string={"sortBy": "userName"}).get_json()
    assert [u["userName"].split("@")[0].lower() for u in body["Resources"]] == [
        "alice.smith",
        "bob_%",
        "carol",
        "dave",
    ]
    assert found(scim, "/Users", 'userName gt "bob_%@example.com"') == sorted(
        [org["carol"], org["dave"]]
    )
    assert found(scim, "/Users", 'userName sw "Bob_"') == [org["bob"]]
    assert found(scim, "/Users", 'userName eq "DAVE@example.org"') == [org["dave"]]
