# ruff: noqa: RUF001 -- look-alike characters are what these tests are about
"""SCIM under the text rules (provisioning/text.py): control characters refused, Unicode
compared by folded keys alike on both databases, filters bounded, the cursor key random."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from provisioning.identity.models import Group, User
from provisioning.tokens.models import ServiceSecret
from scim.filters import MAX_DEPTH, MAX_TERMS
from tests.scim.conftest import (
    ERROR_SCHEMA,
    GROUP_SCHEMA,
    Scim,
    make_app,
    okta_user,
)


def rows(scim: Scim) -> tuple[int, int, int]:
    """Users, groups and audit events stored."""
    with scim.database.reader() as session:
        users = session.scalar(select(func.count()).select_from(User))
        groups = session.scalar(select(func.count()).select_from(Group))
    return users, groups, scim.audit_count()


def refused(response, scim_type: str) -> str:
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["schemas"] == [ERROR_SCHEMA]
    assert body["scimType"] == scim_type, body
    return body["detail"]


def ids(scim: Scim, path: str, scim_filter: str) -> set[str]:
    response = scim.get(path, query_string={"filter": scim_filter, "count": "100"})
    assert response.status_code == 200, response.get_json()
    return {r["id"] for r in response.get_json().get("Resources", [])}


def group(scim: Scim, name: str) -> str:
    response = scim.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


# -- characters ----------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x85"])
@pytest.mark.parametrize(
    "where",
    ["userName", "displayName", "emails", "title", "name", "key"],
)
def test_a_control_character_anywhere_in_a_body_is_invalid_value(scim, char, where):
    body = okta_user("ctl@example.com")
    bad = f"a{char}b"
    if where == "emails":
        body["emails"] = [{"value": "ctl@example.com"}, {"value": bad, "type": "work"}]
    elif where == "name":
        body["name"] = {"givenName": bad, "familyName": "x"}
    elif where == "key":
        body[f"nick{char}Name"] = "x"
    else:
        body[where] = bad
    before = rows(scim)
    detail = refused(scim.post("/Users", body), "invalidValue")
    assert f"U+{ord(char):04X}" in detail
    assert rows(scim) == before


def test_tab_lf_cr_are_kept(scim):
    body = okta_user("tabs@example.com", title="line one\r\n\tline two")
    response = scim.post("/Users", body)
    assert response.status_code == 201
    assert scim.get(f"/Users/{response.get_json()['id']}").get_json()["title"] == body["title"]


def test_nul_in_a_patch_a_put_a_group_and_a_bulk_writes_nothing(scim):
    user = scim.post("/Users", okta_user("nul@example.com")).get_json()
    team = group(scim, "team")
    before = rows(scim)
    answers = [
        scim.patch(
            f"/Users/{user['id']}", [{"op": "replace", "path": "displayName", "value": "\x00"}]
        ),
        scim.put(f"/Users/{user['id']}", {**okta_user("nul@example.com"), "displayName": "a\x00"}),
        scim.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "g\x00"}),
        scim.patch(f"/Groups/{team}", [{"op": "replace", "path": "displayName", "value": "\x00"}]),
        scim.post(
            "/Bulk",
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                "Operations": [
                    {
                        "method": "POST",
                        "path": "/Groups",
                        "bulkId": "a",
                        "data": {"schemas": [GROUP_SCHEMA], "displayName": "b\x00"},
                    },
                ],
            },
        ),
    ]
    for answer in answers:
        refused(answer, "invalidValue")
    assert rows(scim) == before


def test_nul_in_a_filter_is_invalid_filter_and_in_a_search_body_too(scim):
    scim.post("/Users", okta_user("nul@example.com"))
    refused(scim.get("/Users", query_string={"filter": 'userName eq "a\x00b"'}), "invalidFilter")
    refused(scim.get("/Groups", query_string={"filter": 'displayName sw "\x00"'}), "invalidFilter")
    search = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'userName co "\x00"',
    }
    refused(scim.post("/Users/.search", search), "invalidValue")


def test_a_key_too_long_once_folded_is_invalid_value_on_every_write(scim):
    """200 x U+0130 is 200 characters, and 400 once case-folded: past the key column."""
    before = rows(scim)
    long = "İ" * 200
    refused(scim.post("/Users", okta_user("x@example.com", userName=long)), "invalidValue")
    refused(scim.post("/Users", okta_user("y@example.com", displayName=long)), "invalidValue")
    refused(scim.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": long}), "invalidValue")
    assert rows(scim) == before
    user = scim.post("/Users", okta_user("z@example.com")).get_json()
    before = rows(scim)
    patch = [{"op": "replace", "path": "userName", "value": long}]
    refused(scim.patch(f"/Users/{user['id']}", patch), "invalidValue")
    assert rows(scim) == before


# -- Unicode comparisons -----------------------------------------------------------------------


def test_non_ascii_display_names_compare_without_case(scim):
    arzte = group(scim, "Ärzte")
    other = group(scim, "Pflege")
    assert ids(scim, "/Groups", 'displayName eq "ÄRZTE"') == {arzte}
    assert ids(scim, "/Groups", 'displayName eq "ärzte"') == {arzte}
    assert ids(scim, "/Groups", 'displayName ne "ärzte"') == {other}
    assert ids(scim, "/Groups", 'displayName sw "ÄR"') == {arzte}
    # An Entra-style lookup, then create: no duplicate.
    assert ids(scim, "/Groups", 'displayName eq "ÄRZTE"') != set()


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("ΟΔΥΣΣΕΥΣ", "οδυσσευς"),  # final sigma
        ("İlker", "i̇lker"),  # dotted capital I
        ("Straße", "STRASSE"),
        ("ＡＢＣ", "abc"),
    ],
)
def test_users_found_by_any_case_variant(scim, stored, asked):
    user = scim.post(
        "/Users", okta_user("v@example.com", userName=stored, displayName=stored)
    ).get_json()
    assert user.get("id"), user
    for attribute in ("userName", "displayName"):
        assert ids(scim, "/Users", f'{attribute} eq "{asked}"') == {user["id"]}
        assert ids(scim, "/Users", f'{attribute} ne "{asked}"') == set()
    # userName is unique without regard to case: the variant is taken.
    clash = scim.post("/Users", okta_user("w@example.com", userName=asked))
    assert clash.status_code == 409


def test_starts_with_finds_values_whose_next_character_is_the_last_code_point(scim):
    top = group(scim, "ab\U0010ffffz")
    plain = group(scim, "abc")
    group(scim, "ac")
    assert ids(scim, "/Groups", 'displayName sw "ab"') == {top, plain}
    assert ids(scim, "/Groups", 'displayName sw "ab\U0010ffff"') == {top}


# -- filter operands and size ---------------------------------------------------------------


@pytest.mark.parametrize(
    "scim_filter",
    [
        "meta.lastModified gt 5",
        "meta.created lt 1e400",
        "meta.created eq true",
        'meta.created gt "9999-12-31T23:59:59-23:59"',
        'meta.created lt "0001-01-01T00:00:00+23:59"',
        'meta.lastModified ge "not a date"',
    ],
)
def test_date_operands_out_of_range_are_invalid_filter(scim, scim_filter):
    scim.post("/Users", okta_user("d@example.com"))
    refused(scim.get("/Users", query_string={"filter": scim_filter}), "invalidFilter")
    refused(scim.get("/Groups", query_string={"filter": scim_filter}), "invalidFilter")


def test_a_date_with_an_offset_inside_the_range_compares(scim):
    user = scim.post("/Users", okta_user("d@example.com")).get_json()
    assert ids(scim, "/Users", 'meta.created gt "2000-01-01T00:00:00+23:59"') == {user["id"]}


def test_filters_beyond_the_size_limit_are_invalid_filter(scim):
    scim.post("/Users", okta_user("s@example.com"))
    many = " or ".join(f'userName eq "u{i}"' for i in range(1000))
    assert "more than" in refused(
        scim.get("/Users", query_string={"filter": many}), "invalidFilter"
    )
    allowed = " or ".join(f'userName eq "u{i}"' for i in range(MAX_TERMS))
    assert scim.get("/Users", query_string={"filter": allowed}).status_code == 200
    deep = "not (" * MAX_DEPTH + 'userName eq "x"' + ")" * MAX_DEPTH
    refused(scim.get("/Users", query_string={"filter": deep}), "invalidFilter")
    deepest = "not (" * (MAX_DEPTH - 1) + 'userName eq "x"' + ")" * (MAX_DEPTH - 1)
    assert scim.get("/Users", query_string={"filter": deepest}).status_code == 200


def test_the_filter_limits_are_announced_in_the_readme():
    """ServiceProviderConfig's filter object has no field for them (RFC 7643 section 5)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"at most {MAX_TERMS} comparisons and {MAX_DEPTH} levels of nesting" in readme


# -- the cursor key ---------------------------------------------------------------------------


def test_replicas_share_a_random_cursor_key_kept_in_the_database(scim, database):
    for i in range(3):
        scim.post("/Users", okta_user(f"p{i}@example.com"))
    first = scim.get("/Users", query_string={"cursor": "", "count": "1"}).get_json()
    replica = Scim(make_app(database).test_client(), scim.secret, database)
    following = replica.get("/Users", query_string={"cursor": first["nextCursor"], "count": "1"})
    assert following.status_code == 200, following.get_json()
    assert following.get_json()["Resources"][0]["id"] != first["Resources"][0]["id"]
    with database.reader() as session:
        (stored,) = session.scalars(select(ServiceSecret)).all()
    derived = hashlib.sha256(f"scim-cursors\n{database.url}".encode()).hexdigest()
    assert stored.name == "scim-cursors" and len(stored.value) == 64
    assert stored.value != derived


def test_a_cursor_sealed_with_the_old_derived_key_is_refused(scim, database):
    for i in range(3):
        scim.post("/Users", okta_user(f"p{i}@example.com"))
    derived = hashlib.sha256(f"scim-cursors\n{database.url}".encode()).hexdigest()
    old = Scim(make_app(database, scim_cursor_secret=derived).test_client(), scim.secret, database)
    forged = old.get("/Users", query_string={"cursor": "", "count": "1"}).get_json()["nextCursor"]
    answer = scim.get("/Users", query_string={"cursor": forged, "count": "1"})
    refused(answer, "invalidCursor")
    assert uuid.UUID(scim.get("/Users").get_json()["Resources"][0]["id"])


def test_path_less_patch_keys_that_name_no_attribute_are_no_server_error(scim):
    """Found by the fuzz suite: an empty key with a scalar value, a dotted key under a
    scalar one."""
    user = scim.post("/Users", okta_user("keys@example.com")).get_json()
    for value in ({"": None}, {"": "x"}):
        answer = scim.patch(f"/Users/{user['id']}", [{"op": "replace", "value": value}])
        assert answer.status_code < 500, (value, answer.get_json())
    before = rows(scim)
    value = {"title": "a", "title.sub": "b"}
    answer = scim.patch(f"/Users/{user['id']}", [{"op": "replace", "value": value}])
    assert refused(answer, "invalidValue") == "'title.sub' names a part of a value"
    assert rows(scim) == before
