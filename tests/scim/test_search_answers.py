"""Search pages: what scim2-server would answer, and unique lookups as the general path finds.

:class:`scim.service.ProvisioningHandler` answers a search from the storage's documents,
each entry the answer a read of it would get (:class:`scim.answers.Answers`), in an
envelope built by scim2-server for an empty page; and
:meth:`scim.storage.SqlStorage.search_documents` finds ``userName eq`` / ``externalId eq``
with one statement. These tests hold both to what scim2-server's own handler and the
general filter path give.
"""

from __future__ import annotations

import io
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scim2_server.handler import ScimHandler

from tests.scim.conftest import GROUP_SCHEMA, Scim, make_app, okta_user
from tests.scim.test_okta import mapped_group

CURSORS = ("nextCursor", "previousCursor")


@pytest.fixture
def populated(scim: Scim) -> Scim:
    """Five users (one deactivated, one deleted) in two groups, one mapped to a connector."""
    users = [scim.post("/Users", okta_user(f"user.{n}@example.com")).get_json() for n in range(5)]
    mapped, _ = mapped_group(scim, "mapped", "github")
    plain = scim.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "plain"}).get_json()
    for group_id, members in ((mapped, users[:3]), (plain["id"], users[1:])):
        value = [{"value": u["id"]} for u in members]
        added = scim.patch(
            f"/Groups/{group_id}", [{"op": "add", "path": "members", "value": value}]
        )
        assert added.status_code == 200
    scim.patch(f"/Users/{users[3]['id']}", [{"op": "replace", "value": {"active": False}}])
    assert scim.delete(f"/Users/{users[4]['id']}").status_code == 204
    return scim


def answered_by_both(app, method: str, path: str, **request: object) -> tuple[dict, dict]:
    """The body our handler answers, and the one scim2-server's own handler (storage
    resources validated, published and listed by the library) answers, for one request."""
    extension = next(iter(app.extensions["scim"].values()))
    library = ScimHandler(extension.service, extension.storage)
    with app.test_request_context("/scim/v2" + path, method=method, **request):
        scim_request = extension.read_request()
        operation = "search_with_body" if method == "POST" else "search"
        ours = getattr(extension.handler, operation)(scim_request)
        theirs = getattr(library, operation)(scim_request)
    assert ours.status == theirs.status
    ours_body, theirs_body = dict(ours.body), dict(theirs.body)
    # Cursors are sealed with the time of issue: present alike, not equal.
    for name in CURSORS:
        assert (name in ours_body) == (name in theirs_body), name
        ours_body.pop(name, None)
        theirs_body.pop(name, None)
    return ours_body, theirs_body


SEARCHES = [
    ("GET", "/Users", {}),
    ("GET", "/Users", {"query_string": {"startIndex": "2", "count": "2"}}),
    ("GET", "/Users", {"query_string": {"startIndex": "9"}}),
    ("GET", "/Users", {"query_string": {"count": "0"}}),
    ("GET", "/Users", {"query_string": {"sortBy": "userName", "sortOrder": "descending"}}),
    ("GET", "/Users", {"query_string": {"filter": 'userName eq "USER.1@example.com"'}}),
    ("GET", "/Users", {"query_string": {"filter": 'userName eq "user.4@example.com"'}}),
    ("GET", "/Users", {"query_string": {"filter": 'userName sw "user."', "count": "2"}}),
    ("GET", "/Users", {"query_string": {"attributes": "userName,groups"}}),
    ("GET", "/Users", {"query_string": {"excludedAttributes": "groups,entitlements"}}),
    ("GET", "/Users", {"query_string": {"cursor": "", "count": "2"}}),
    ("GET", "/Groups", {}),
    ("GET", "/Groups", {"query_string": {"excludedAttributes": "members"}}),
    ("GET", "/", {"query_string": {"filter": "displayName pr or userName pr"}}),
    (
        "POST",
        "/Users/.search",
        {
            "json": {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": 'externalId eq "00uuser2"',
                "attributes": ["userName"],
            }
        },
    ),
]


@pytest.mark.parametrize(("method", "path", "request_"), SEARCHES)
def test_a_search_answers_as_scim2_servers_handler_would(populated, method, path, request_):
    app = make_app(populated.database)
    for _ in range(2):  # the second time, every entry comes from the answers kept
        ours, theirs = answered_by_both(app, method, path, **request_)
        assert ours == theirs
    assert ours["totalResults"] == theirs["totalResults"]


def test_cursor_pages_follow_one_another(populated):
    app = make_app(populated.database)
    client = Scim(app.test_client(), populated.secret, populated.database)
    first = client.get("/Users", query_string={"cursor": "", "count": "2"}).get_json()
    second = client.get(
        "/Users", query_string={"cursor": first["nextCursor"], "count": "2"}
    ).get_json()
    names = [u["userName"] for u in first["Resources"] + second["Resources"]]
    # Without sortBy a page is in id order: the four live users, each once.
    assert sorted(names) == [f"user.{n}@example.com" for n in range(4)]
    assert "nextCursor" not in second and second["itemsPerPage"] == 2


# userNames differing in case only from those stored; and externalIds.
NAMES = st.lists(
    st.text(alphabet="aAbBé\u00c9_-1", min_size=1, max_size=6), min_size=1, max_size=5, unique=True
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=NAMES, deleted=st.sets(st.integers(0, 4)), data=st.data())
def test_a_unique_lookup_finds_what_the_general_path_finds(scim, names, deleted, data):
    """``userName eq`` (case-insensitive) and ``externalId eq`` (case-exact) take the
    one-statement path; ``not (... ne ...)`` means the same and takes the general one."""
    suffix = uuid.uuid4().hex[:6]
    made = []
    for n, name in enumerate(names):
        user = okta_user(f"u{name}.{suffix}@example.com", externalId=f"x-{name}-{suffix}")
        created = scim.post("/Users", user)
        if created.status_code == 409:  # equal to an earlier name but for case
            continue
        assert created.status_code == 201, created.get_json()
        made.append(created.get_json())
        if n in deleted:
            assert scim.delete(f"/Users/{made[-1]['id']}").status_code == 204
    asked = data.draw(st.sampled_from(names))
    variant = data.draw(st.sampled_from([asked, asked.upper(), asked.lower(), asked.swapcase()]))
    for attribute, value in (
        ("userName", f"u{variant}.{suffix}@example.com"),
        ("externalId", f"x-{variant}-{suffix}"),
    ):
        for extra in ({}, {"startIndex": "2"}, {"count": "0"}, {"attributes": "externalId"}):
            unique = scim.get(
                "/Users", query_string={"filter": f'{attribute} eq "{value}"', **extra}
            ).get_json()
            general = scim.get(
                "/Users", query_string={"filter": f'not ({attribute} ne "{value}")', **extra}
            ).get_json()
            assert unique == general
            assert unique["totalResults"] <= 1


def test_a_body_sent_in_chunks_is_read_and_a_get_without_one_is_answered(scim):
    """Requests without Content-Length are read as having no body only when they have no
    Transfer-Encoding either (RFC 9112 section 6.3)."""
    body = json.dumps(okta_user("chunked@example.com")).encode()
    created = scim.client.post(
        "/scim/v2/Users",
        input_stream=io.BytesIO(body),
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn sets it
        headers={
            "Authorization": f"Bearer {scim.secret}",
            "Content-Type": "application/scim+json",
            "Transfer-Encoding": "chunked",
        },
    )
    assert created.status_code == 201, created.get_json()
    read = scim.get(f"/Users/{created.get_json()['id']}")
    assert read.status_code == 200 and read.get_json()["userName"] == "chunked@example.com"
    assert json.loads(read.data) == read.get_json()
