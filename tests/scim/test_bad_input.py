"""Bad requests: a SCIM error with status, scimType and a usable detail, and nothing written."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from provisioning.identity.models import Group, Membership, User
from tests.scim.conftest import (
    ERROR_SCHEMA,
    GROUP_SCHEMA,
    PATCH_OP,
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


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["userName", "op", "path", "value", "members", "emails", "active", "x"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=JSON_VALUES)
def test_no_body_is_a_server_error(scim, alice, body):
    for response in (
        scim.post("/Users", body),
        scim.request("PUT", f"/Users/{alice['id']}", body),
        scim.request("PATCH", f"/Users/{alice['id']}", body),
        scim.request(
            "PATCH", f"/Users/{alice['id']}", {"schemas": [PATCH_OP], "Operations": [body]}
        ),
    ):
        assert response.status_code < 500, response.get_json()
