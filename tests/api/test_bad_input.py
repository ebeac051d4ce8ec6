"""Hostile input at the admin API: a 4xx in problem+json that says what went wrong, and
nothing written; over every route, for generated requests too."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from provisioning.api.edge import BODIES
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
    "/api/v1/mappings": [1],
    "/api/v1/revocation-holds": [1],
    "/api/v1/findings": [1],
    "/api/v1/jobs/runs": [1],
    "/api/v1/okta/runs": [1],
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
    assert len(routes) == 21
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
