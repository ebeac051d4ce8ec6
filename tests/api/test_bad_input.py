"""Hostile input at the admin API: a 4xx in problem+json that says what went wrong, and
nothing written; over every route, for generated requests too."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from provisioning.api.edge import BODIES, SCOPES
from provisioning.connectors.models import Action, Connector
from provisioning.demo import seed
from provisioning.identity.models import Group, User
from provisioning.tokens import credentials
from tests import hostile
from tests.org import Org
from tests.rows import rows

# -- cursors -------------------------------------------------------------------------


def cursor(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def raw_cursor(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# Each list, and a well-formed cursor for it (its sort key's shape).
LISTS = {
    "/api/v1/audit": [1],
    "/api/v1/connectors": ["github"],
    "/api/v1/users": ["ada@example.com", "00000000-0000-0000-0000-000000000000"],
    "/api/v1/groups": ["eng", "00000000-0000-0000-0000-000000000000"],
    "/api/v1/grants": [1],
    "/api/v1/exceptions": [1],
    "/api/v1/mappings": [1],
    "/api/v1/revocation-holds": [1],
    "/api/v1/findings": [1],
    "/api/v1/jobs/runs": [1],
    "/api/v1/okta/runs": [1],
    "/api/v1/okta/parked-events": [1],
    "/api/v1/requests": [1],
    "/api/v1/reviews": [1],
    "/api/v1/targets": [1],
}

# Cursors no list ever gave out, whatever its sort key.
FORGED = {
    "a float": cursor([1e300]),
    "an integer past 64 bits": cursor([10**30]),
    "a boolean": cursor([True]),
    "a null": cursor([None]),
    "a list": cursor([[1]]),
    "an object": cursor({"id": 1}),
    "NUL": cursor(["a\x00b"]),
    "a lone surrogate": cursor(["\ud800"]),
    "not base64": "!!!!",
    "not JSON": raw_cursor(b"\xff\xfe{"),
    "deep": raw_cursor(b"[" * 150 + b"]" * 150),
}


@pytest.fixture
def org(api, origin):
    with api.database.transaction() as session:
        org = Org(session, origin)
        org.join(org.user("ada@example.com"), org.group("eng"))
        org.connector("github")


def assert_problem(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == status
    assert response.json["type"].startswith("urn:provisioning:problem:")
    for word in words:
        assert word.lower() in response.json["detail"].lower(), response.json["detail"]


def test_the_cursor_of_every_list_reads_back(api, org):
    for path, values in LISTS.items():
        assert api.get(path, query_string={"cursor": cursor(values)}).status_code == 200, path


@pytest.mark.parametrize("forgery", sorted(FORGED))
def test_a_forged_cursor_is_400_on_every_list(api, org, forgery):
    before = rows(api.database)
    for path in LISTS:
        response = api.get(path, query_string={"cursor": FORGED[forgery]})
        assert_problem(response, 400, "cursor")
    assert rows(api.database) == before


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("/api/v1/mappings", [2**31]),  # an int4 key on PostgreSQL
        ("/api/v1/targets", [-(2**31) - 1]),
        ("/api/v1/grants", [2**63]),  # a bigint key
        ("/api/v1/audit", ["5"]),  # a number as text
        ("/api/v1/connectors", [5]),  # a number for text
        ("/api/v1/connectors", ["x" * 101]),  # longer than the column
        ("/api/v1/users", ["ada@example.com", "not-a-uuid"]),
        ("/api/v1/users", ["ada@example.com"]),  # one value short
        ("/api/v1/grants", [1, 2]),  # one value too many
    ],
)
def test_a_cursor_value_out_of_its_keys_range_or_type_is_400(api, org, path, values):
    assert_problem(api.get(path, query_string={"cursor": cursor(values)}), 400, "cursor")


def test_a_cursor_at_the_edge_of_its_keys_range_is_read(api, org):
    assert api.get("/api/v1/mappings", query_string={"cursor": cursor([2**31 - 1])}).json == {
        "items": [],
        "next_cursor": None,
    }
    assert api.get("/api/v1/grants", query_string={"cursor": cursor([2**63 - 1])}).json == {
        "items": [],
        "next_cursor": None,
    }


# -- bodies: what is wrong, said ----------------------------------------------------------


def body_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every operation taking a JSON body, path parameters filled in."""
    filled = {
        "slug": "github",
        "name": "search",
        "user_id": "00000000-0000-0000-0000-000000000000",
    }
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint not in BODIES:
            continue
        path = rule.rule
        for argument in rule.arguments:
            value = filled.get(argument, "1")
            path = path.replace(f"<int:{argument}>", value).replace(f"<uuid:{argument}>", value)
            path = path.replace(f"<{argument}>", value)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return routes


def test_every_body_route_says_what_is_wrong_with_a_body(api, org):
    routes = body_routes(api.app)
    assert len(routes) == 29
    before = rows(api.database)
    for method, path in routes:
        json_type = {"Content-Type": "application/json"}
        cases = [
            (api.request(method, path, data=b"{not json", headers=json_type), 400, "not JSON"),
            (api.request(method, path, data=b"", headers=json_type), 400, "empty"),
            (api.request(method, path), 415, "Content-Type"),
            (
                api.request(method, path, data=b"{}", headers={"Content-Type": "text/plain"}),
                415,
                "text/plain",
            ),
        ]
        for response, status, words in cases:
            assert_problem(response, status, words)
            assert "instance of" not in response.json["detail"]
    assert rows(api.database) == before


def test_a_caller_without_credentials_is_401_whatever_the_body(api):
    response = api.client.post(
        "/api/v1/connectors", data=b"[" * 5000, headers={"Content-Type": "text/plain"}
    )
    assert_problem(response, 401)


# -- every route, generated requests ------------------------------------------------------

FORMATS = {
    "date": ["2027-01-01", "9999-12-31", "0001-01-01", "2027-02-30"],
    "date-time": [
        "2027-01-01T00:00:00Z",
        "9999-12-31T23:59:59+14:00",
        "0001-01-01T00:00:00-12:00",
        "2027-01-01T00:00:00",
        "2027-01-01T00:00:00+25:00",
    ],
    "uuid": ["00000000-0000-0000-0000-000000000000", "not-a-uuid"],
}


@dataclass
class Operation:
    """One admin operation: its method, path template, and values worth trying for its path
    parameters, query parameters and body fields (from the OpenAPI document)."""

    method: str
    rule: str
    arguments: dict[str, list[Any]]
    query: dict[str, list[Any]]
    fields: dict[str, list[Any]]
    has_body: bool


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _samples(schema: dict[str, Any], components: dict[str, Any], known: dict) -> list[Any]:
    """Values at and around what ``schema`` allows: enums, formats, bounds, lengths."""
    schema = _resolve(schema, components)
    found: list[Any] = list(schema.get("enum", []))
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            found += _samples(sub, components, known)
    found += FORMATS.get(schema.get("format", ""), [])
    if schema.get("format") == "uuid":
        found += known["uuids"]
    if schema.get("type") == "integer":
        for bound in ("minimum", "maximum"):
            if bound in schema:
                edge = int(schema[bound])
                found += [edge, edge - 1, edge + 1]
    if schema.get("type") == "string" and "maxLength" in schema:
        found += ["x" * schema["maxLength"], "x" * (schema["maxLength"] + 1)]
    if "pattern" in schema and "a-z0-9" in schema["pattern"]:
        found += known["slugs"]
    if schema.get("type") == "array" and "items" in schema:
        items = _samples(schema["items"], components, known)
        found += [items[:1], items, items * 50]
    if schema.get("type") == "object" and "properties" in schema:
        found.append(
            {
                k: (_samples(v, components, known) or [None])[0]
                for k, v in schema["properties"].items()
            }
        )
    return found


def operations(app, document: dict[str, Any], known: dict[str, list[Any]]) -> list[Operation]:
    components = document["components"]["schemas"]
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint not in SCOPES:
            continue
        template = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            spec = document["paths"][template][method.lower()]
            parameters = spec.get("parameters", [])
            query = {
                p["name"]: _samples(p["schema"], components, known)
                for p in parameters
                if p["in"] == "query"
            }
            arguments = {
                p["name"]: _samples(p["schema"], components, known) + known.get(p["name"], [])
                for p in parameters
                if p["in"] == "path"
            }
            fields: dict[str, list[Any]] = {}
            if "requestBody" in spec:
                body = _resolve(
                    spec["requestBody"]["content"]["application/json"]["schema"], components
                )
                fields = {
                    name: _samples(prop, components, known)
                    for name, prop in body.get("properties", {}).items()
                }
            found.append(
                Operation(method, template, arguments, query, fields, rule.endpoint in BODIES)
            )
    return found


# Cursors as a client could forge them: one or two values of any kind, or anything.
CURSORS = st.lists(hostile.json_values(), min_size=1, max_size=2).map(cursor) | (
    st.binary(max_size=40).map(raw_cursor) | hostile.strings()
)


def requests(operation: Operation) -> st.SearchStrategy:
    """(method, path, query, body, headers) of requests for ``operation``."""
    arguments = {
        name: st.sampled_from(values) | hostile.strings() | hostile.number_texts()
        for name, values in operation.arguments.items()
    }
    names = [*sorted(operation.query), "limit", "access_token", "x"]
    query_values = (
        st.sampled_from([v for vs in operation.query.values() for v in vs] or [""])
        | hostile.strings()
        | hostile.number_texts()
    )
    queries = st.dictionaries(st.sampled_from(names), query_values.map(str), max_size=4)
    fields = tuple(sorted(operation.fields))
    field_values = st.sampled_from([v for vs in operation.fields.values() for v in vs] or [None])
    documents = st.dictionaries(
        st.sampled_from(fields or ("x",)),
        field_values | hostile.json_values(fields),
        max_size=len(fields) + 1,
    ) | hostile.json_values(fields)
    payloads = hostile.bodies(documents)
    conditions = st.none() | st.sampled_from(['"x"', "*", 'W/"1"', ""])

    @st.composite
    def draw_request(draw):
        path = operation.rule
        for name, values in arguments.items():
            path = path.replace("{" + name + "}", hostile.quoted(str(draw(values))))
        query = draw(queries)
        if "cursor" in operation.query and draw(st.booleans()):
            query["cursor"] = draw(CURSORS)
        body, content_type = draw(payloads)
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        condition = draw(conditions)
        if condition is not None:
            headers["If-Match"] = condition
        return operation.method, path, query, body, headers

    return draw_request()


def test_no_admin_request_is_a_server_error_and_a_refused_one_writes_nothing(api, database, origin):
    """Budget: 500 examples in CI (about 20 s on SQLite); EDGE_FUZZ_EXAMPLES for more."""
    with database.transaction() as session:
        seed(session, origin)
        known = {
            "slugs": list(session.scalars(select(Connector.slug))),
            "uuids": [str(i) for i in session.scalars(select(User.id).limit(3))]
            + [str(i) for i in session.scalars(select(Group.id).limit(3))],
            "name": list(session.scalars(select(Action.name).limit(5))),
        }
    token = api.static_token("fuzzer", [s.value for s in credentials.Scope])
    document = api.client.get("/api/v1/openapi.json").json
    found = operations(api.app, document, known)
    assert len(found) == 72  # every admin operation
    tally: Counter = Counter()

    @settings(max_examples=hostile.budget(500), deadline=None)
    @given(request=st.one_of([requests(operation) for operation in found]))
    def check(request):
        method, path, query, body, headers = request
        before = rows(database)
        response = api.client.open(
            path,
            method=method,
            query_string=hostile.query_string(query),
            data=body,
            headers={"Authorization": f"Bearer {token}", **headers},
        )
        tally[hostile.status_class(response.status_code)] += 1
        assert response.status_code < 500, (method, path, response.get_data(as_text=True))
        if response.status_code >= 400:
            assert response.mimetype == "application/problem+json"
            assert rows(database) == before, (method, path, response.json)

    check()
    print(hostile.report("admin", tally))
