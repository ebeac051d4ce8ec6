"""Search at the root (RFC 7644 sections 3.4.2.1 and 3.4.3): Users and Groups as one collection."""

from __future__ import annotations

import pytest

from tests.scim.conftest import GROUP_SCHEMA, USER_SCHEMA, okta_user
from tests.scim.test_bad_input import assert_error

SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


@pytest.fixture
def org(scim):
    """Three users and two groups; returns name -> SCIM id, and the ids in the default order."""
    ids = {}
    for name, extra in (
        ("alice.smith", {"title": "Boss"}),
        ("bob.jones", {}),
        ("carol.white", {}),
    ):
        response = scim.post("/Users", okta_user(f"{name}@example.com", **extra))
        assert response.status_code == 201, response.get_json()
        ids[name.split(".")[0]] = response.get_json()["id"]
    for name, members in (("admins", ["alice", "bob"]), ("Billing", ["carol"])):
        body = {
            "schemas": [GROUP_SCHEMA],
            "displayName": name,
            "members": [{"value": ids[m]} for m in members],
        }
        response = scim.post("/Groups", body)
        assert response.status_code == 201, response.get_json()
        ids[name.lower()] = response.get_json()["id"]
    return ids


def default_order(org) -> list[str]:
    """Users then Groups, each by id."""
    users = sorted(org[n] for n in ("alice", "bob", "carol"))
    groups = sorted(org[n] for n in ("admins", "billing"))
    return users + groups


def search(scim, **params) -> dict:
    response = scim.get("/", query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def ids_of(body: dict) -> list[str]:
    return [r["id"] for r in body.get("Resources", [])]


def names_of(body: dict) -> list[str]:
    return [r.get("userName", r.get("displayName")) for r in body.get("Resources", [])]


def test_users_and_groups_as_one_collection(scim, org):
    body = search(scim)
    assert body["totalResults"] == 5
    assert body["itemsPerPage"] == 5
    assert body["startIndex"] == 1
    assert ids_of(body) == default_order(org)
    kinds = [(r["meta"]["resourceType"], r["schemas"][0]) for r in body["Resources"]]
    assert kinds == [("User", USER_SCHEMA)] * 3 + [("Group", GROUP_SCHEMA)] * 2
    for resource in body["Resources"]:
        endpoint = "Users" if resource["meta"]["resourceType"] == "User" else "Groups"
        assert resource["meta"]["location"].endswith(f"/scim/v2/{endpoint}/{resource['id']}")
    admins = next(r for r in body["Resources"] if r["id"] == org["admins"])
    assert {m["value"] for m in admins["members"]} == {org["alice"], org["bob"]}

    posted = scim.post("/.search", {"schemas": [SEARCH_REQUEST]})
    assert posted.status_code == 200
    assert ids_of(posted.get_json()) == default_order(org)


@pytest.mark.parametrize(
    ("scim_filter", "expected"),
    [
        ("userName pr", ["alice", "bob", "carol"]),
        ('userName eq "BOB.jones@example.com"', ["bob"]),
        ('title eq "boss"', ["alice"]),
        ('displayName sw "b"', ["bob", "billing"]),
        ('displayName eq "admins"', ["admins"]),
        ("members pr", ["admins", "billing"]),
        ('members[value eq "{alice}"]', ["admins"]),
        ('members.value eq "{carol}" or userName sw "carol"', ["carol", "billing"]),
        ('id eq "{billing}"', ["billing"]),
        ('id eq "{bob}" or id eq "{admins}"', ["bob", "admins"]),
        ('emails[type eq "work"] and not (userName sw "a")', ["bob", "carol"]),
        # A test on an attribute a type lacks is false there, so its negation is true.
        ('not (userName eq "alice.smith@example.com")', ["bob", "carol", "admins", "billing"]),
        ('userName eq "nobody@example.com"', []),
    ],
)
def test_the_filter_applies_to_each_type(scim, org, scim_filter, expected):
    scim_filter = scim_filter.format(**org)
    body = search(scim, filter=scim_filter)
    wanted = [i for i in default_order(org) if i in {org[n] for n in expected}]
    assert ids_of(body) == wanted
    assert body["totalResults"] == len(expected)
    posted = scim.post("/.search", {"schemas": [SEARCH_REQUEST], "filter": scim_filter})
    assert ids_of(posted.get_json()) == wanted


def test_index_pages_cross_the_users_groups_boundary(scim, org):
    everyone = default_order(org)
    pages = [search(scim, startIndex=start, count=2) for start in (1, 3, 5)]
    assert [ids_of(p) for p in pages] == [everyone[0:2], everyone[2:4], everyone[4:5]]
    assert [p["totalResults"] for p in pages] == [5, 5, 5]
    assert [p["startIndex"] for p in pages] == [1, 3, 5]
    assert [p["itemsPerPage"] for p in pages] == [2, 2, 1]
    beyond = search(scim, startIndex=6, count=2)
    assert beyond["totalResults"] == 5 and ids_of(beyond) == []
    assert search(scim, count=0)["totalResults"] == 5
    assert ids_of(search(scim, count=0)) == []

    # Sorted and filtered, with the boundary inside a page.
    filtered = {"filter": 'displayName sw "b" or userName sw "a"', "sortBy": "displayName"}
    first = search(scim, startIndex=1, count=2, **filtered)
    second = search(scim, startIndex=3, count=2, **filtered)
    assert first["totalResults"] == second["totalResults"] == 3
    assert names_of(first) + names_of(second) == [
        "alice.smith@example.com",
        "Billing",
        "bob.jones@example.com",
    ]


def test_sort_by_orders_both_types_together(scim, org):
    by_display_name = names_of(search(scim, sortBy="displayName"))
    assert by_display_name == [
        "admins",
        "alice.smith@example.com",  # displayName "Alice Smith"
        "Billing",
        "bob.jones@example.com",
        "carol.white@example.com",
    ]
    descending = names_of(search(scim, sortBy="displayName", sortOrder="descending"))
    assert descending == list(reversed(by_display_name))
    # Groups have no userName: last ascending, first descending, each way by id.
    groups = sorted([org["admins"], org["billing"]])
    ascending = search(scim, sortBy="userName")
    assert names_of(ascending)[:3] == [
        "alice.smith@example.com",
        "bob.jones@example.com",
        "carol.white@example.com",
    ]
    assert ids_of(ascending)[3:] == groups
    descending = search(scim, sortBy="userName", sortOrder="descending")
    assert ids_of(descending)[:2] == list(reversed(groups))
    assert names_of(descending)[2:] == [
        "carol.white@example.com",
        "bob.jones@example.com",
        "alice.smith@example.com",
    ]
    created = ids_of(search(scim, sortBy="meta.created"))
    assert created == [org[n] for n in ("alice", "bob", "carol", "admins", "billing")]


def walk(scim, **params) -> tuple[list[str], list[str]]:
    """Follow nextCursor to the end, then previousCursor back to the start."""
    pages = []
    cursor = ""
    while cursor is not None:
        body = search(scim, cursor=cursor, **params)
        assert "startIndex" not in body and body["totalResults"] == 5
        pages.append(body)
        cursor = body.get("nextCursor")
    forward = [i for p in pages for i in ids_of(p)]
    back = pages[-1]
    backward = ids_of(back)
    while "previousCursor" in back:
        back = search(scim, cursor=back["previousCursor"], **params)
        backward = ids_of(back) + backward
    return forward, backward


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sortBy": "displayName"},
        {"sortBy": "displayName", "sortOrder": "descending"},
        {"sortBy": "userName"},
        {"sortBy": "userName", "sortOrder": "descending"},
        {"sortBy": "id"},
        {"sortBy": "meta.created", "sortOrder": "descending"},
        {"sortBy": "active"},
    ],
)
def test_cursor_pages_cross_the_users_groups_boundary(scim, org, params):
    indexed = ids_of(search(scim, **params))
    assert len(indexed) == 5
    for count in (1, 2):
        forward, backward = walk(scim, count=count, **params)
        assert forward == indexed
        assert backward == indexed


@pytest.mark.parametrize("codepoint_order", [True, False])
def test_cursor_pages_with_and_without_a_code_point_collation(scim, org, codepoint_order):
    """On a PostgreSQL whose collation is not C, the sort value is compared COLLATE "C"."""
    storage = scim.client.application.extensions["scim"]["scim"].storage
    storage._codepoint = codepoint_order
    forward, backward = walk(scim, count=2, sortBy="displayName")
    assert forward == backward == ids_of(search(scim, sortBy="displayName"))
    assert ids_of(search(scim, filter='displayName gt "b"', sortBy="displayName")) == [
        org["billing"],
        org["bob"],
        org["carol"],
    ]


def test_a_root_cursor_serves_only_its_own_query(scim, org):
    first = search(scim, cursor="", count=2)
    for path, params in (
        ("/Users", {"cursor": first["nextCursor"], "count": 2}),
        ("/", {"cursor": first["nextCursor"], "count": 2, "sortBy": "userName"}),
        ("/", {"cursor": "bm90IGEgY3Vyc29y", "count": 2}),
    ):
        response = scim.get(path, query_string=params)
        assert_error(response, 400, "invalidCursor")


def test_deleted_users_are_not_found(scim, org):
    assert scim.delete(f"/Users/{org['bob']}").status_code == 204
    body = search(scim)
    assert body["totalResults"] == 4
    assert org["bob"] not in ids_of(body)
    admins = next(r for r in body["Resources"] if r["id"] == org["admins"])
    assert [m["value"] for m in admins["members"]] == [org["alice"]]


def test_attributes_apply_to_each_type(scim, org):
    body = search(scim, attributes="userName,members")
    users = [r for r in body["Resources"] if USER_SCHEMA in r["schemas"]]
    groups = [r for r in body["Resources"] if GROUP_SCHEMA in r["schemas"]]
    assert len(users) == 3 and len(groups) == 2
    assert all(set(u) == {"schemas", "id", "userName"} for u in users)
    assert all(set(g) == {"schemas", "id", "members"} for g in groups)
    body = search(scim, excludedAttributes="members,emails")
    assert all("members" not in r and "emails" not in r for r in body["Resources"])
    assert all("displayName" in r for r in body["Resources"])


@pytest.mark.parametrize(
    ("params", "scim_type"),
    [
        ({"filter": 'favouriteColour eq "green"'}, "invalidFilter"),
        ({"filter": '(userName eq "a"'}, "invalidFilter"),
        ({"filter": "userName eq"}, "invalidFilter"),
        ({"filter": 'id gt "x"'}, "invalidFilter"),
        ({"filter": 'meta.version eq "x"'}, "invalidFilter"),
        ({"sortBy": "favouriteColour"}, "invalidPath"),
        ({"sortBy": "members"}, "invalidPath"),
        ({"cursor": "", "startIndex": "2"}, "invalidValue"),
    ],
)
def test_bad_searches_are_400(scim, org, params, scim_type):
    assert_error(scim.get("/", query_string=params), 400, scim_type)
    body = {"schemas": [SEARCH_REQUEST], **params}
    if "startIndex" in body:
        body["startIndex"] = int(body["startIndex"])
    assert_error(scim.post("/.search", body), 400, scim_type)


def test_a_search_body_that_is_not_a_search_is_400(scim, org):
    assert_error(scim.post("/.search", data="not json"), 400, "invalidSyntax")
    assert_error(scim.post("/.search", data="[1]"), 400, "invalidSyntax")
    response = scim.post("/.search", {"schemas": [SEARCH_REQUEST], "count": "many"})
    assert_error(response, 400, "invalidValue")
