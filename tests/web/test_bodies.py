"""The body rule, the same at every edge: a size limit counted as the body streams, a JSON
parse within a depth limit, each refusal a 4xx in the edge's own format, nothing written."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from provisioning.audit.log import Origin, Source
from provisioning.okta.models import DeliveryState, InboxDelivery
from provisioning.settings import load
from provisioning.tokens import credentials
from provisioning.web import bodies
from provisioning.web.app import create_app
from tests.org import Org
from tests.rows import rows
from tests.web.conftest import HOOK_SECRET, LIMIT

SITE_LIMIT = 65_536  # the in-process app's body limit: room for 10,000 levels of nesting

SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


@dataclass(frozen=True)
class Edge:
    """One operation that takes a JSON body, and the format its errors come in."""

    name: str
    method: str
    path: str  # "{user}": a SCIM user's id
    content_type: str
    scim: bool = False
    hook: bool = False

    def __str__(self) -> str:
        return self.name


EDGES = [
    Edge("admin-create", "POST", "/api/v1/connectors", "application/json"),
    Edge("admin-patch", "PATCH", "/api/v1/connectors/github", "application/json"),
    Edge("admin-decision", "POST", "/api/v1/decisions", "application/json"),
    Edge("scim-create", "POST", "/scim/v2/Users", "application/scim+json", scim=True),
    Edge("scim-replace", "PUT", "/scim/v2/Users/{user}", "application/scim+json", scim=True),
    Edge("scim-patch", "PATCH", "/scim/v2/Users/{user}", "application/scim+json", scim=True),
    Edge("scim-bulk", "POST", "/scim/v2/Bulk", "application/scim+json", scim=True),
    Edge("scim-search", "POST", "/scim/v2/.search", "application/scim+json", scim=True),
    Edge("okta-hook", "POST", "/hooks/okta/events", "application/json", hook=True),
]


@dataclass
class Site:
    client: Any
    database: Any
    token: str
    user_id: str

    def send(self, edge: Edge, data: bytes, content_type: str | None = "edge", **headers: str):
        headers = dict(headers)
        if edge.hook:
            headers.setdefault("Authorization", HOOK_SECRET)
        else:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        if content_type == "edge":
            content_type = edge.content_type
        if content_type is not None:
            headers["Content-Type"] = content_type
        path = edge.path.format(user=self.user_id)
        return self.client.open(path, method=edge.method, data=data, headers=headers)


@pytest.fixture
def site(database) -> Site:
    origin = Origin("test", Source.CLI)
    with database.transaction() as session:
        token = credentials.create(session, "edges", [s.value for s in credentials.Scope], origin)
        org = Org(session, origin)
        org.connector("github")
        user_id = str(org.user("ada@example.com").id)
    settings = load(
        database_url=database.url, max_request_bytes=SITE_LIMIT, okta_hook_secrets=HOOK_SECRET
    )
    app = create_app(settings, database, background=False)
    return Site(app.test_client(), database, token, user_id)


def assert_refused(response, edge: Edge, status: int, *words: str) -> None:
    """A 4xx in the edge's own format whose detail says what went wrong."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json(force=True)
    if edge.scim:
        assert response.mimetype == "application/scim+json"
        assert body["schemas"] == [SCIM_ERROR]
        assert body["status"] == str(status)
        if status == 400:
            assert body["scimType"] == "invalidSyntax"
    else:
        assert response.mimetype == "application/problem+json"
        assert body["status"] == status
        assert body["type"].startswith("urn:provisioning:problem:")
    for word in words:
        assert word.lower() in body["detail"].lower(), body["detail"]


def kept_rejected(database) -> list[InboxDelivery]:
    with database.reader() as session:
        return list(
            session.scalars(
                select(InboxDelivery).where(InboxDelivery.state == DeliveryState.REJECTED)
            )
        )


def assert_nothing_written(site: Site, before, edge: Edge, status: int) -> None:
    """Nothing written; a malformed Okta delivery that authenticated is kept, rejected, for
    inspection (and never applied), as the hook always did."""
    after = rows(site.database)
    if edge.hook and status == 400:
        assert after.without("okta_inbox") == before.without("okta_inbox")
        assert after.counts["okta_inbox"] == before.counts["okta_inbox"] + 1
        assert kept_rejected(site.database)
    else:
        assert after == before


def nested(depth: int) -> bytes:
    """A JSON object holding arrays ``depth`` levels deep in all."""
    return b'{"a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


# -- nesting ---------------------------------------------------------------------------


@pytest.mark.parametrize("edge", EDGES, ids=str)
def test_json_nested_ten_thousand_deep_is_400_and_writes_nothing(site, edge):
    before = rows(site.database)
    response = site.send(edge, b"[" * 10_000 + b"]" * 10_000)
    assert_refused(response, edge, 400, "nested", str(bodies.MAX_DEPTH))
    assert_nothing_written(site, before, edge, 400)


@pytest.mark.parametrize("edge", EDGES, ids=str)
def test_the_depth_limit_is_the_same_at_every_edge(site, edge):
    at_limit = site.send(edge, nested(bodies.MAX_DEPTH))
    assert at_limit.status_code < 500
    assert "nested" not in (at_limit.get_json(force=True) or {}).get("detail", "")
    assert_refused(site.send(edge, nested(bodies.MAX_DEPTH + 1)), edge, 400, "nested")


# -- what is not JSON ----------------------------------------------------------------------


NOT_JSON = {
    "text": (b"this is not json", "not JSON"),
    "truncated": (b'{"slug": "git', "not JSON"),
    "empty": (b"", "empty"),
    "latin-1": ('{"name": "Zoë"}'.encode("latin-1"), "UTF-8"),
    "utf-16": ('{"name": "x"}'.encode("utf-16"), "UTF-8"),
    "bom": (b'\xef\xbb\xbf{"name": "x"}', "byte order mark"),
    "nan": (b'{"name": NaN}', "NaN"),
    "infinity": (b'{"name": -Infinity}', "Infinity"),
    "huge float": (b'{"name": 1e999}', "out of range"),
    "huge integer": (b'{"name": 1' + b"0" * 5000 + b"}", "digits"),
}


@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_a_body_that_is_not_json_is_400_saying_so_at_every_edge(site, case):
    data, words = NOT_JSON[case]
    for edge in EDGES:
        before = rows(site.database)
        assert_refused(site.send(edge, data), edge, 400, words)
        assert_nothing_written(site, before, edge, 400)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_sent_as_another_media_type_is_415_at_every_edge(site, content_type):
    before = rows(site.database)
    for edge in EDGES:
        response = site.send(edge, b'{"slug": "x"}', content_type)
        assert_refused(response, edge, 415, content_type.partition(";")[0], "JSON")
    assert rows(site.database) == before


def test_admin_bodies_need_a_json_content_type(site):
    edge = EDGES[0]
    assert_refused(site.send(edge, b'{"slug": "x"}', None), edge, 415, "Content-Type")


def test_scim_reads_a_body_without_content_type_as_json(site):
    """RFC 7644 section 3.8: JSON is the default."""
    edge = next(e for e in EDGES if e.name == "scim-create")
    body = {"schemas": [USER_SCHEMA], "userName": "grace@example.com"}
    response = site.send(edge, json.dumps(body).encode(), None)
    assert response.status_code == 201, response.get_json()


# -- size ----------------------------------------------------------------------------------


@pytest.mark.parametrize("edge", EDGES, ids=str)
def test_a_body_over_the_limit_is_413_in_the_edges_format(site, edge):
    before = rows(site.database)
    response = site.send(edge, b'{"pad": "' + b"x" * SITE_LIMIT + b'"}')
    assert_refused(response, edge, 413, str(SITE_LIMIT))
    assert rows(site.database) == before


CHUNKED = {
    "admin-create": (
        "/api/v1/connectors",
        {
            "slug": "wiki",
            "name": "Wiki",
            "kind": "remote",
            "capability": "read",
            "publisher": "directory",
            "interfaces": ["web"],
        },
        201,
    ),
    "scim-create": (
        "/scim/v2/Users",
        {"schemas": [USER_SCHEMA], "userName": "chunked@example.com"},
        201,
    ),
    "scim-bulk": (
        "/scim/v2/Bulk",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "b1",
                    "data": {"schemas": [USER_SCHEMA], "userName": "bulk@example.com"},
                }
            ],
        },
        200,
    ),
    "okta-hook": ("/hooks/okta/events", {"eventType": "com.okta.event_hook"}, 400),
}


def send_chunked(served, path: str, body: bytes, *, hook: bool, chunk: int = 500):
    connection = served.connect()
    connection.putrequest("POST", path)
    connection.putheader("Authorization", HOOK_SECRET if hook else f"Bearer {served.token}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for start in range(0, len(body), chunk):
        part = body[start : start + chunk]
        connection.send(b"%x\r\n%s\r\n" % (len(part), part))
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    answer = response.status, response.getheader("Content-Type"), response.read()
    connection.close()
    return answer


def padded(document: dict[str, Any], size: int) -> bytes:
    """``document`` as JSON followed by whitespace (JSON allows it): exactly ``size`` bytes."""
    text = json.dumps(document).encode()
    return text + b" " * (size - len(text))


@pytest.mark.parametrize("name", sorted(CHUNKED))
def test_a_chunked_body_over_the_limit_is_413_not_cut(served, name):
    path, document, _ = CHUNKED[name]
    before = rows(served.database)
    status, content_type, text = send_chunked(
        served, path, padded(document, LIMIT + 1), hook=name == "okta-hook"
    )
    assert status == 413, text
    expected = "application/scim+json" if name.startswith("scim") else "application/problem+json"
    assert content_type == expected
    assert str(LIMIT) in json.loads(text)["detail"]
    assert rows(served.database) == before


@pytest.mark.parametrize("name", sorted(CHUNKED))
def test_a_chunked_body_up_to_the_limit_is_read_whole(served, name):
    path, document, ok = CHUNKED[name]
    body = padded(document, LIMIT)
    status, _, text = send_chunked(served, path, body, hook=name == "okta-hook", chunk=97)
    # The hook's body is read whole: its envelope is refused for what it lacks, not as cut JSON.
    assert status == ok, text
    if name == "okta-hook":
        assert "data.events" in json.loads(text)["detail"]


# -- the parser, for every input --------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet='[]{}"\\ a', max_size=12)  # what the depth count must see past
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(
    value=JSON_VALUES,
    wrappers=st.lists(st.sampled_from(["list", "dict"]), max_size=80),
    ascii_only=st.booleans(),
)
def test_any_json_document_is_read_as_json_reads_it_up_to_the_depth_limit(
    value, wrappers, ascii_only
):
    for wrapper in wrappers:
        value = [value] if wrapper == "list" else {"k": value}
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    if depth(value) <= bodies.MAX_DEPTH:
        assert bodies.parse(raw) == value
    else:
        with pytest.raises(bodies.Refused) as refused:
            bodies.parse(raw)
        assert refused.value.code == 400 and "nested" in refused.value.description


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_are_a_document_or_a_400(raw):
    try:
        bodies.parse(raw)
    except bodies.Refused as refused:
        assert refused.code == 400
        assert refused.description
