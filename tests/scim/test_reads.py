"""Reads by id answered from :class:`scim.answers.Answers`: never staler than the rows.

Every check compares the answer of the app under test, which has already answered
the same read, with the answer of an app built afresh on the same database (its
Answers empty): the two must be equal, body and headers, after any change to what
the resource shows, whoever made it.
"""

from __future__ import annotations

import json
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scim2_server.responses import ScimResponse

from provisioning.connectors.models import Connector
from scim.answers import Answers
from tests.scim.conftest import GROUP_SCHEMA, Scim, make_app, okta_user
from tests.scim.test_okta import mapped_group


def same_as_fresh(scim: Scim, path: str, **kwargs) -> dict:
    """The read's answer, checked equal to that of a fresh app; the JSON body."""
    answered = scim.get(path, **kwargs)
    fresh = Scim(make_app(scim.database).test_client(), scim.secret, scim.database)
    expected = fresh.get(path, **kwargs)
    assert answered.status_code == expected.status_code == 200, answered.get_json()
    assert answered.get_json() == expected.get_json()
    for header in ("ETag", "Content-Location", "Content-Type"):
        assert answered.headers.get(header) == expected.headers.get(header), header
    return answered.get_json()


def test_a_user_read_shows_each_change_to_its_groups_grants_and_profile(scim):
    group_id, _ = mapped_group(scim, "eng-platform", "github")
    user = scim.post("/Users", okta_user("ada@example.com")).get_json()
    path = f"/Users/{user['id']}"
    assert "groups" not in same_as_fresh(scim, path)

    # A membership: the user's version does not move, its groups and grants do.
    added = scim.patch(
        f"/Groups/{group_id}", [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]
    )
    assert added.status_code == 200
    shown = same_as_fresh(scim, path)
    assert [g["display"] for g in shown["groups"]] == ["eng-platform"]
    assert [e["value"] for e in shown["entitlements"]] == ["github"]
    assert shown["meta"]["version"] == user["meta"]["version"]

    # The group renamed, then the connector renamed outside SCIM.
    renamed = scim.patch(
        f"/Groups/{group_id}", [{"op": "replace", "value": {"displayName": "platform"}}]
    )
    assert renamed.status_code == 200
    assert [g["display"] for g in same_as_fresh(scim, path)["groups"]] == ["platform"]
    with scim.database.transaction() as session:
        session.query(Connector).filter_by(slug="github").one().name = "GitHub Enterprise"
    assert [e["display"] for e in same_as_fresh(scim, path)["entitlements"]] == [
        "GitHub Enterprise"
    ]

    # The profile, and a projection of it.
    patched = scim.patch(path, [{"op": "replace", "path": "displayName", "value": "Ada L."}])
    assert patched.status_code == 200
    assert same_as_fresh(scim, path)["displayName"] == "Ada L."
    assert set(same_as_fresh(scim, path, query_string={"attributes": "userName"})) == {
        "schemas",
        "id",
        "userName",
    }
    assert "groups" not in same_as_fresh(scim, path, query_string={"excludedAttributes": "groups"})

    # Out of the group: no group, no grant.
    removed = scim.patch(
        f"/Groups/{group_id}", [{"op": "remove", "path": f'members[value eq "{user["id"]}"]'}]
    )
    assert removed.status_code == 200
    shown = same_as_fresh(scim, path)
    assert "groups" not in shown and "entitlements" not in shown


def test_a_read_by_id_shows_groups_and_grants_as_a_search_page_does(scim):
    """A read by id aggregates a user's groups and grants in its one statement; a
    search page reads them apart. Both list them in the database's order: groups by
    name (then id), grants by connector slug."""
    user = scim.post("/Users", okta_user("order@example.com")).get_json()
    names = ["beta", "Beta", "alpha", "Zed", "\u00e9t\u00e9", "beta"]
    for n, name in enumerate(names):
        group_id, _ = mapped_group(
            scim, f"{name}-{n}" if name == "beta" and n else name, f"c{5 - n}"
        )
        added = scim.patch(
            f"/Groups/{group_id}",
            [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}],
        )
        assert added.status_code == 200
    by_id = same_as_fresh(scim, f"/Users/{user['id']}")
    page = scim.get(f'/Users?filter=id eq "{user["id"]}"').get_json()
    (found,) = page["Resources"]
    assert by_id == found
    assert len(by_id["groups"]) == len(names)
    assert [e["value"] for e in by_id["entitlements"]] == [f"c{n}" for n in range(6)]
    assert {e["type"] for e in by_id["entitlements"]} == {"read_write"}


def test_a_deleted_resource_is_not_answered_from_an_earlier_read(scim):
    user = scim.post("/Users", okta_user("gone@example.com")).get_json()
    group = scim.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "g"}).get_json()
    for path in (f"/Users/{user['id']}", f"/Groups/{group['id']}"):
        same_as_fresh(scim, path)
        assert scim.delete(path).status_code == 204
        assert scim.get(path).status_code == 404


def test_if_none_match_gets_a_304_until_the_resource_changes(scim):
    user = scim.post("/Users", okta_user("etag@example.com")).get_json()
    path = f"/Users/{user['id']}"
    etag = scim.get(path).headers["ETag"]
    again = scim.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag and not again.data
    assert scim.get(path, headers={"If-Match": '"other"'}).status_code == 412
    scim.patch(path, [{"op": "replace", "path": "displayName", "value": "changed"}])
    changed = scim.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.get_json()["displayName"] == "changed"


def test_a_group_read_shows_each_change_to_its_members(scim):
    group = scim.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "team"}).get_json()
    path = f"/Groups/{group['id']}"
    ada, bob = (scim.post("/Users", okta_user(f"{n}@example.com")).get_json() for n in "ab")
    assert "members" not in same_as_fresh(scim, path)
    scim.patch(path, [{"op": "add", "path": "members", "value": [{"value": ada["id"]}]}])
    assert [m["value"] for m in same_as_fresh(scim, path)["members"]] == [ada["id"]]
    scim.patch(path, [{"op": "replace", "path": "members", "value": [{"value": bob["id"]}]}])
    assert [m["value"] for m in same_as_fresh(scim, path)["members"]] == [bob["id"]]


# Changes a client makes to one user and one mapped group, in any order.
OPERATIONS = st.lists(
    st.sampled_from(["join", "leave", "rename-group", "rename-user", "deactivate", "activate"]),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=OPERATIONS)
def test_any_sequence_of_changes_reads_as_a_fresh_read_would(scim, operations):
    suffix = uuid.uuid4().hex[:8]
    group_id, _ = mapped_group(scim, f"group-{suffix}", f"connector-{suffix}")
    user = scim.post("/Users", okta_user(f"user.{suffix}@example.com")).get_json()
    user_path, group_path = f"/Users/{user['id']}", f"/Groups/{group_id}"
    same_as_fresh(scim, user_path)
    same_as_fresh(scim, group_path)
    for n, operation in enumerate(operations):
        if operation == "join":
            change = [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]
            scim.patch(group_path, change)
        elif operation == "leave":
            change = [{"op": "remove", "path": f'members[value eq "{user["id"]}"]'}]
            scim.patch(group_path, change)
        elif operation == "rename-group":
            scim.patch(group_path, [{"op": "replace", "value": {"displayName": f"g-{suffix}-{n}"}}])
        elif operation == "rename-user":
            scim.patch(user_path, [{"op": "replace", "path": "displayName", "value": f"u{n}"}])
        else:
            active = operation == "activate"
            scim.patch(user_path, [{"op": "replace", "value": {"active": active}}])
        same_as_fresh(scim, user_path)
        same_as_fresh(scim, group_path)


def test_answers_keep_the_most_recently_used_and_skip_large_documents():
    answers = Answers(size=2, max_key=10)
    first, second, third = (answers.put((k, "1"), ScimResponse(200, {"n": k})) for k in "abc")
    assert answers.get(("a", "1")) is None  # the least recently used went
    assert answers.get(("b", "1")) is second  # now the most recently used
    answers.put(("d", "1"), ScimResponse(200, {"n": "d"}))
    assert answers.get(("c", "1")) is None
    assert answers.get(("b", "1")) is second and answers.get(("d", "1")).body == {"n": "d"}
    large = answers.put(("e", "x" * 11), ScimResponse(200, {"n": "e"}))
    assert answers.get(("e", "x" * 11)) is None
    # Kept or not, what is sent is the body's JSON, serialised once.
    assert json.loads(large.text) == {"n": "e"} and large.text is large.text
    assert first.body == {"n": "a"} and third.body == {"n": "c"}


def test_each_reading_of_attributes_gives_its_own_projection(scim):
    """The service keeps its readings of ``attributes`` / ``excludedAttributes``: each
    pair of strings still gets its own projection, and a bad one its error every time."""
    user = scim.post("/Users", okta_user("projection@example.com")).get_json()
    path = f"/Users/{user['id']}"
    for _ in range(2):
        only = same_as_fresh(scim, path, query_string={"attributes": "userName"})
        assert set(only) == {"schemas", "id", "userName"}
        without = same_as_fresh(scim, path, query_string={"excludedAttributes": "name"})
        assert "name" not in without and "userName" in without
        assert "name" in same_as_fresh(scim, path)
        bad = scim.get(path, query_string={"attributes": "userName", "excludedAttributes": "x"})
        assert bad.status_code == 400, bad.get_json()
