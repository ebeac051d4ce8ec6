"""Bad requests: a SCIM error with status, scimType and a usable detail, and nothing written."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from provisioning.identity.models import Group, Membership, User
from tests import hostile
from tests.rows import rows as all_rows
from tests.scim.conftest import (
    ENTERPRISE,
    ERROR_SCHEMA,
    GROUP_SCHEMA,
    PATCH_OP,
    USER_SCHEMA,
    Scim,
    make_app,
    make_token,
    okta_user,
)


def rows(scim) -> tuple[int, int, int, int]:
    """Users, groups, present memberships, audit events: what a refused request must not change."""
    with scim.database.reader() as session:
        return (
            session.scalar(select(func.count()).select_from(User)),
            session.scalar(select(func.count()).select_from(Group)),
            session.scalar(select(func.count()).where(Membership.present.is_(True))),
            scim.audit_count(),
        )


def assert_error(response, status: int, scim_type: str | None, *words: str) -> None:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["schemas"] == [ERROR_SCHEMA]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type
    assert body["detail"]
    for word in words:
        assert word.lower() in body["detail"].lower(), body["detail"]


@pytest.fixture
def alice(scim):
    return scim.post("/Users", okta_user("alice@example.com")).get_json()


@pytest.fixture
def group(scim, alice):
    return scim.post(
        "/Groups",
        {"schemas": [GROUP_SCHEMA], "displayName": "ops", "members": [{"value": alice["id"]}]},
    ).get_json()


def test_malformed_json(scim, alice):
    before = rows(scim)
    assert_error(scim.post("/Users", data='{"userName": '), 400, "invalidSyntax", "json")
    assert_error(
        scim.request("PATCH", f"/Users/{alice['id']}", data="{not json"), 400, "invalidSyntax"
    )
    assert rows(scim) == before


def test_wrong_schemas_and_missing_required_attributes(scim):
    before = rows(scim)
    wrong = okta_user("bob@example.com", schemas=[GROUP_SCHEMA])
    assert scim.post("/Users", wrong).status_code == 400
    missing = okta_user("bob@example.com")
    del missing["userName"]
    assert_error(scim.post("/Users", missing), 400, "invalidValue", "userName")
    assert_error(scim.post("/Groups", {"schemas": [GROUP_SCHEMA]}), 400, "invalidValue")
    assert rows(scim) == before


def test_unknown_attribute_in_a_patch_path(scim, alice):
    before = rows(scim)
    response = scim.patch(
        f"/Users/{alice['id']}",
        [
            {"op": "replace", "path": "displayName", "value": "Alice"},
            {"op": "replace", "path": "favouriteColour", "value": "green"},
        ],
    )
    assert response.status_code == 400
    assert response.get_json()["scimType"] in ("invalidPath", "noTarget")
    assert "favouriteColour" in response.get_json()["detail"]
    assert rows(scim) == before
    assert scim.get(f"/Users/{alice['id']}").get_json()["displayName"] == alice["displayName"]


@pytest.mark.parametrize(
    "scim_filter",
    [
        "userName eq",
        'userName xx "a"',
        'favouriteColour eq "green"',
        '(userName eq "a"',
        "emails[type",
    ],
)
def test_invalid_filters(scim, alice, scim_filter):
    response = scim.get("/Users", query_string={"filter": scim_filter})
    assert_error(response, 400, "invalidFilter")


def test_too_large_body(database):
    secret = make_token(database, "okta", ["scim:provision"])
    scim = Scim(make_app(database, max_request_bytes=2048).test_client(), secret, database)
    before = rows(scim)
    body = okta_user("big@example.com", title="x" * 4096)
    response = scim.post("/Users", body)
    assert_error(response, 413, None, "2048")
    assert rows(scim) == before


def test_mutability_violations(scim, alice, group):
    before = rows(scim)
    for operations in (
        [{"op": "replace", "path": "id", "value": "00000000-0000-0000-0000-000000000000"}],
        [{"op": "add", "path": "groups", "value": [{"value": group["id"]}]}],
        [{"op": "add", "path": "entitlements", "value": [{"value": "github"}]}],
        [{"op": "replace", "path": "meta.created", "value": "2000-01-01T00:00:00Z"}],
    ):
        response = scim.patch(f"/Users/{alice['id']}", operations)
        assert_error(response, 400, "mutability")
    assert rows(scim) == before


def test_unsupported_operations(scim, alice):
    before = rows(scim)
    response = scim.patch(f"/Users/{alice['id']}", [{"op": "move", "path": "title"}])
    assert response.status_code == 400 and response.get_json()["detail"]
    assert_error(scim.get("/Widgets"), 404, None)
    response = scim.request(
        "POST",
        "/Users",
        data=json.dumps(okta_user("c@example.com")),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 415
    assert rows(scim) == before


def test_member_that_is_not_a_user_changes_nothing(scim, alice, group):
    before = rows(scim)
    for value in ("not-a-uuid", "5b1b7a5e-8c36-4a0e-a7ed-6f0bdb0f0c11"):
        response = scim.patch(
            f"/Groups/{group['id']}",
            [
                {"op": "remove", "path": f'members[value eq "{alice["id"]}"]'},
                {"op": "add", "path": "members", "value": [{"value": value}]},
            ],
        )
        assert_error(response, 400, "invalidValue", value)
    assert rows(scim) == before
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").get_json()["members"]] == [
        alice["id"]
    ]


def test_if_match_with_an_old_version_is_a_412(scim, alice):
    renamed = scim.patch(
        f"/Users/{alice['id']}", [{"op": "replace", "path": "displayName", "value": "Al"}]
    )
    before = rows(scim)
    old = alice["meta"]["version"]
    response = scim.patch(
        f"/Users/{alice['id']}",
        [{"op": "replace", "path": "displayName", "value": "Alicia"}],
        headers={"If-Match": old},
    )
    assert_error(response, 412, None)
    assert_error(scim.delete(f"/Users/{alice['id']}", headers={"If-Match": old}), 412, None)
    assert rows(scim) == before
    current = renamed.get_json()["meta"]["version"]
    ok = scim.patch(
        f"/Users/{alice['id']}",
        [{"op": "replace", "path": "displayName", "value": "Alicia"}],
        headers={"If-Match": current},
    )
    assert ok.status_code == 200
    assert (
        scim.get(f"/Users/{alice['id']}", headers={"If-None-Match": ok.headers["ETag"]}).status_code
        == 304
    )


def test_unknown_resources_are_404(scim):
    for path in ("/Users/nope", "/Users/5b1b7a5e-8c36-4a0e-a7ed-6f0bdb0f0c11", "/Groups/nope"):
        assert_error(scim.get(path), 404, None)
        assert_error(scim.delete(path), 404, None)
        assert_error(
            scim.patch(path, [{"op": "replace", "path": "displayName", "value": "x"}]), 404, None
        )


def test_errors_raised_before_a_route_is_found_are_scim_errors(database):
    """A path no SCIM rule matches (the catch-all path does not match a line break) is
    405 or 404 before the request reaches the SCIM blueprint: still a SCIM error."""
    secret = make_token(database, "okta", ["scim:provision"])
    scim = Scim(make_app(database, max_request_bytes=2048).test_client(), secret, database)
    assert_error(scim.post("/Users/%0D%0Ax", {"schemas": [USER_SCHEMA]}), 405, None)
    assert_error(scim.post("/Users/%0D%0Ax", data="x" * 4096), 413, None, "2048")


SEARCHES = ["/Users", "/Groups", "/"]
BODY_SEARCHES = ["/Users/.search", "/Groups/.search", "/.search"]
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


@pytest.mark.parametrize("value", [2**31, 10**20, 2**63])
def test_a_start_index_past_what_the_database_can_page_to_is_400(scim, group, value):
    before = rows(scim)
    for path in SEARCHES:
        response = scim.get(path, query_string={"startIndex": str(value)})
        assert_error(response, 400, "invalidValue", "startIndex", str(2**31 - 1))
    for path in BODY_SEARCHES:
        response = scim.post(path, {"schemas": [SEARCH_REQUEST], "startIndex": value})
        assert_error(response, 400, "invalidValue", "startIndex", str(2**31 - 1))
    assert rows(scim) == before


def test_paging_within_bounds_is_answered(scim, alice, group):
    """The largest startIndex pages past the end; below 1 is 1; a negative count is 0; a
    count past maxPageSize is maxPageSize (RFC 7644 section 3.4.2.4, RFC 9865)."""
    for path in SEARCHES:
        last = scim.get(path, query_string={"startIndex": str(2**31 - 1)}).get_json()
        assert last["Resources"] == [] and last["startIndex"] == 2**31 - 1
        first = scim.get(path, query_string={"startIndex": "-5"}).get_json()
        assert first["startIndex"] == 1 and first["Resources"]
        none = scim.get(path, query_string={"count": "-5"}).get_json()
        assert none["Resources"] == [] and none["totalResults"] > 0
        for query in ({"count": str(10**20)}, {"count": str(10**20), "cursor": ""}):
            page = scim.get(path, query_string=query).get_json()
            assert page["itemsPerPage"] == page["totalResults"] > 0
    for path in BODY_SEARCHES:
        page = scim.post(path, {"schemas": [SEARCH_REQUEST], "count": 10**20}).get_json()
        assert page["itemsPerPage"] == page["totalResults"] > 0


def test_the_largest_page_is_announced(scim):
    config = scim.get("/ServiceProviderConfig").get_json()
    assert config["pagination"]["maxPageSize"] == 1000
    assert config["filter"]["maxResults"] == 1000


# -- every route, generated requests ------------------------------------------------------

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
PATHS = [
    "/Users",
    "/Groups",
    "/Users/{user}",
    "/Groups/{group}",
    "/Users/{junk}",
    "/Groups/{junk}",
    "/Bulk",
    "/.search",
    "/Users/.search",
    "/Groups/.search",
    "/",
    "/Me",
    "/ServiceProviderConfig",
    "/Schemas",
    "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
    "/ResourceTypes",
    "/ResourceTypes/User",
    "/Widgets",
    "/Users/{user}/groups",
]
# The operations of each route, and the kind of body each takes (None: no body).
ROUTES = [
    ("GET", "/Users", None),
    ("GET", "/Groups", None),
    ("GET", "/", None),
    ("GET", "/Users/{user}", None),
    ("GET", "/Groups/{group}", None),
    ("POST", "/Users", "resource"),
    ("POST", "/Groups", "resource"),
    ("PUT", "/Users/{user}", "resource"),
    ("PUT", "/Groups/{group}", "resource"),
    ("PATCH", "/Users/{user}", "patch"),
    ("PATCH", "/Groups/{group}", "patch"),
    ("DELETE", "/Users/{junk}", None),
    ("DELETE", "/Groups/{junk}", None),
    ("POST", "/Bulk", "bulk"),
    ("POST", "/.search", "search"),
    ("POST", "/Users/.search", "search"),
    ("POST", "/Groups/.search", "search"),
]
ATTRIBUTES = [
    "userName",
    "displayName",
    "name.givenName",
    "name.familyName",
    "emails",
    'emails[type eq "work"].value',
    "emails.value",
    "active",
    "externalId",
    "title",
    "members",
    'members[value eq "{user}"]',
    "groups",
    "entitlements",
    "meta.lastModified",
    "id",
    ENTERPRISE + ":manager",
    ENTERPRISE + ":employeeNumber",
    ENTERPRISE + ":manager.value",
]
OPERATORS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "EQ", "xx"]
SEARCH_PARAMETERS = ["filter", "startIndex", "count", "attributes", "excludedAttributes"]
SEARCH_PARAMETERS += ["sortBy", "sortOrder", "cursor"]


def scim_strings() -> st.SearchStrategy[str]:
    # NUL and every control character included: provisioning/text.py refuses them.
    return hostile.strings()


def scim_values() -> st.SearchStrategy:
    return hostile.json_values((*ATTRIBUTES, "value", "$ref", "type", "primary", "display"))


@st.composite
def filters(draw) -> str:
    def comparison() -> str:
        attribute = draw(st.sampled_from(ATTRIBUTES) | scim_strings())
        operator = draw(st.sampled_from(OPERATORS))
        value = draw(hostile.filter_operands())
        return f"{attribute} {operator} {value}"

    shape = draw(st.integers(0, 9))
    if shape == 0:  # past the filter's size limit: more terms than scim.filters.MAX_TERMS
        many = f'userName eq "u" or {comparison()}'
        return " or ".join([many] * draw(st.integers(60, 600)))
    if shape == 1:  # deeper than scim.filters.MAX_DEPTH, or within it
        depth = draw(st.integers(5, 40))
        return "not (" * depth + comparison() + ")" * depth
    parts = [comparison() for _ in range(draw(st.integers(1, 3)))]
    joined = draw(st.sampled_from([" and ", " or ", " and not "])).join(parts)
    return draw(st.sampled_from([joined, f"({joined})", f"not ({joined})", joined + ")"]))


def documents(user: str, group: str) -> dict[str, st.SearchStrategy]:
    """SCIM request documents by kind: resources, PATCH operations, bulk requests,
    searches, and anything."""
    ids = st.sampled_from([user, group, "not-an-id", "00000000-0000-0000-0000-000000000000"])
    members = st.lists(st.fixed_dictionaries({"value": ids | scim_strings()}), max_size=3)
    resources = st.fixed_dictionaries(
        {"schemas": st.sampled_from([[USER_SCHEMA], [GROUP_SCHEMA], [USER_SCHEMA, ENTERPRISE]])},
        optional={
            "userName": scim_strings(),
            "displayName": scim_strings(),
            "externalId": scim_strings(),
            "active": st.booleans() | scim_values(),
            "name": st.fixed_dictionaries({}, optional={"givenName": scim_values()}),
            "emails": st.lists(scim_values(), max_size=2),
            "members": members | scim_values(),
            ENTERPRISE: st.fixed_dictionaries(
                {}, optional={"manager": ids | scim_values(), "employeeNumber": scim_values()}
            ),
            "title": scim_values(),
        },
    )
    operation = st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "replace", "remove", "Add", "Replace", "move"])},
        optional={
            "path": st.sampled_from([a.replace("{user}", user) for a in ATTRIBUTES])
            | scim_strings(),
            "value": resources | members | scim_values(),
        },
    )
    patches = st.fixed_dictionaries(
        {"schemas": st.just([PATCH_OP]), "Operations": st.lists(operation, max_size=4)}
    )
    bulk_operation = st.fixed_dictionaries(
        {"method": st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET", "post"])},
        optional={
            "path": st.sampled_from(["/Users", "/Groups", f"/Users/{user}", f"/Groups/{group}"])
            | scim_strings(),
            "bulkId": st.sampled_from(["a", "b"]) | scim_strings(),
            "data": resources | patches | scim_values(),
            "version": scim_strings(),
        },
    )
    bulks = st.fixed_dictionaries(
        {"schemas": st.just([BULK]), "Operations": st.lists(bulk_operation, max_size=4)},
        optional={"failOnErrors": hostile.INTEGERS},
    )
    searches = st.fixed_dictionaries(
        {"schemas": st.just([SEARCH_REQUEST])},
        optional={
            "filter": filters() | scim_strings(),
            "startIndex": hostile.INTEGERS | scim_values(),
            "count": hostile.INTEGERS | scim_values(),
            "sortBy": st.sampled_from(ATTRIBUTES) | scim_strings(),
            "sortOrder": st.sampled_from(["ascending", "descending"]) | scim_strings(),
            "attributes": st.lists(st.sampled_from(ATTRIBUTES) | scim_strings(), max_size=3),
            "cursor": scim_strings(),
        },
    )
    return {
        "resource": resources,
        "patch": patches,
        "bulk": bulks,
        "search": searches,
        "any": scim_values(),
    }


def scim_requests(user: str, group: str) -> st.SearchStrategy:
    """(method, path, query, body, headers) of SCIM requests: mostly each route's own
    operation with the body it takes, and any method on any path with any body."""
    values = filters() | scim_strings() | hostile.number_texts()
    queries = st.dictionaries(
        st.sampled_from([*SEARCH_PARAMETERS, "access_token"]), values, max_size=3
    )
    searches = (
        queries
        | st.fixed_dictionaries({}, optional={name: values for name in SEARCH_PARAMETERS})
        | st.fixed_dictionaries({"startIndex": hostile.number_texts()})
        | st.fixed_dictionaries({"count": hostile.number_texts()})
        | st.fixed_dictionaries(
            {"startIndex": hostile.number_texts(), "count": hostile.number_texts()}
        )
    )
    kinds = documents(user, group)
    payloads = {
        kind: hostile.bodies(strategy | kinds["any"], json_type="application/scim+json")
        for kind, strategy in kinds.items()
    }
    routes = (
        st.sampled_from(ROUTES)
        | st.sampled_from(ROUTES)
        | st.tuples(
            st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
            st.sampled_from(PATHS),
            st.sampled_from([*kinds, None]),
        )
    )
    conditions = st.none() | st.tuples(
        st.sampled_from(["If-Match", "If-None-Match"]),
        st.sampled_from(['W/"1"', "*", '"x"', ""]),
    )

    @st.composite
    def requests(draw):
        method, template, kind = draw(routes)
        junk = hostile.quoted(draw(scim_strings())) or "x"
        path = template.format(user=user, group=group, junk=junk)
        body, content_type = draw(payloads[kind or "any"])
        if kind is None and draw(st.booleans()):
            body = None
        headers = {"Content-Type": content_type} if content_type is not None else {}
        condition = draw(conditions)
        if condition:
            headers[condition[0]] = condition[1]
        searching = method == "GET" and template in ("/Users", "/Groups", "/")
        return method, path, draw(searches if searching else queries), body, headers

    return requests()


def test_no_scim_request_is_a_server_error_and_a_refused_one_writes_nothing(scim, alice, group):
    """Budget: 500 examples in CI (about 15 s on SQLite); EDGE_FUZZ_EXAMPLES for more."""
    tally: Counter = Counter()

    @settings(max_examples=hostile.budget(500), deadline=None)
    @given(request=scim_requests(alice["id"], group["id"]))
    def check(request):
        method, path, query, body, headers = request
        before = all_rows(scim.database)
        response = scim.client.open(
            "/scim/v2" + path,
            method=method,
            query_string=hostile.query_string(query),
            data=body,
            headers={"Authorization": f"Bearer {scim.secret}", **headers},
        )
        answer = response.get_data(as_text=True)
        # /Me is 501, as RFC 7644 section 3.11 asks of a provider without it (documented)
        me = path.startswith("/Me") and response.status_code == 501
        tally["501 /Me" if me else hostile.status_class(response.status_code)] += 1
        assert response.status_code < 500 or me, (method, path, query, body, answer)
        if response.status_code >= 400:
            assert response.mimetype == "application/scim+json", (method, path, answer)
            assert response.get_json()["schemas"] == [ERROR_SCHEMA]
            assert all_rows(scim.database) == before, (method, path, answer)

    check()
    print(hostile.report("scim", tally))
