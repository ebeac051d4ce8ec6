"""AuthZEN batches and searches are answered set-wise: the statements the driver runs for a
batch (a gateway filtering ``tools/list``) or a page of a search do not grow with the
number of evaluations or candidates, and the answers are those of evaluating each alone.

Statements are counted with the drivers' own hooks (sqlite3's trace callback, psycopg's
cursor factory), so those run on the driver's cursor (:mod:`provisioning.hotpath`) are
counted too, not only those SQLAlchemy executes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from provisioning.connectors.models import Interface
from provisioning.entitlements import authzen, decisions
from provisioning.entitlements.mappings import create_mapping
from tests.org import Org

SERVERS, TOOLS, PEOPLE = 5, 20, 30
POLICIES = ("always_allow", "always_allow", "needs_approval", "blocked")
# Statements for a whole batch of people named by email, whatever its size: servers by URI,
# tools by name, the engine by userName (finding nobody), the people by userName, Okta id
# and email, then the engine by id (people, catalogue, sources with their grants).
MOST = 10


def uri(server: int) -> str:
    return f"https://mcp{server}.example/mcp"


@contextmanager
def counted(connection: Any) -> Iterator[list[str]]:
    """Every statement the driver runs on ``connection`` while open."""
    seen: list[str] = []
    raw = connection.connection.driver_connection
    if connection.dialect.name == "sqlite":
        raw.set_trace_callback(seen.append)
        try:
            yield seen
        finally:
            raw.set_trace_callback(None)
        return
    previous = raw.cursor_factory

    class Counting(previous):  # type: ignore[misc, valid-type]
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(str(query))
            return super().execute(query, *args, **kwargs)

        def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(str(query))
            return super().executemany(query, *args, **kwargs)

    raw.cursor_factory = Counting
    try:
        yield seen
    finally:
        raw.cursor_factory = previous


@pytest.fixture
def org(database, origin) -> list[str]:
    """People (by email) in a group that holds five MCP servers of twenty tools each, a
    quarter of them needing approval and a quarter blocked; one person inactive."""
    with database.transaction() as session:
        org = Org(session, origin)
        people = [
            org.user(f"p{n:02d}", email=f"p{n:02d}@example.com", active=n != 7)
            for n in range(PEOPLE)
        ]
        group = org.group("wide")
        for person in people:
            org.join(person, group)
        for s in range(SERVERS):
            tools = tuple(
                (f"tool_{t:02d}", "read" if t % 2 else "write", POLICIES[t % len(POLICIES)])
                for t in range(TOOLS)
            )
            server = org.connector(f"server-{s}", actions=tools, resource_uri=uri(s))
            create_mapping(session, origin, group, server, "read" if s == 4 else "read_write")
    return [f"p{n:02d}@example.com" for n in range(PEOPLE)]


# The shapes of a gateway's questions: a tool of a server named by its resource URI or its
# slug, a connector's action, a method on a whole server, a tool named alone, one a batch
# cannot read.
SHAPES: list[Callable[[int], dict[str, Any]]] = [
    lambda i: {
        "action": {"name": "tools/call"},
        "resource": {
            "type": "tool",
            "id": f"tool_{i % TOOLS:02d}",
            "properties": {"mcp_server": uri(i % SERVERS)},
        },
    },
    lambda i: {
        "action": {"name": "tools/call"},
        "resource": {
            "type": "tool",
            "id": f"tool_{i % TOOLS:02d}",
            "properties": {"connector": f"server-{i % SERVERS}"},
        },
    },
    lambda i: {
        "action": {"name": f"tool_{i % (TOOLS + 1):02d}"},  # tool_20 is not catalogued
        "resource": {"type": "connector", "id": f"server-{i % (SERVERS + 1)}"},
    },
    lambda i: {
        "action": {"name": ("tools/list", "initialize", "tools/call")[i % 3]},
        "resource": {"type": "mcp_server", "id": uri(i % (SERVERS + 1))},
    },
    lambda i: {"action": {"name": "tools/call"}, "resource": {"type": "tool", "id": "tool_00"}},
    lambda i: {"action": {"name": "tools/call"}},
]


def gateway_batch(size: int, subjects: list[str]) -> dict[str, Any]:
    items = []
    for i in range(size):
        item = SHAPES[i % len(SHAPES)](i // len(SHAPES))
        item["subject"] = {"type": "identity", "id": subjects[i % len(subjects)]}
        items.append(item)
    return {"context": {"agent": "claude-code"}, "evaluations": items}


def statements_and_answers(database, document: dict[str, Any]) -> tuple[int, list[dict]]:
    asked = authzen.batch(document)
    assert asked is not None

    def work(connection: Any) -> tuple[int, list[dict]]:
        decider = authzen.Decider(connection, Interface.WEB)
        with counted(connection) as seen:
            outcomes = decider.run(asked.items, asked.semantic)
        return len(seen), [o.answer() for o in outcomes]

    return database.hot_read(work)


def alone(database, document: dict[str, Any]) -> list[dict]:
    """Each evaluation of the batch asked on its own, on a Decider of its own."""
    asked = authzen.batch(document)
    assert asked is not None

    def work(connection: Any) -> list[dict]:
        answers = []
        for item in asked.items:
            try:
                if isinstance(item, authzen.Invalid):
                    raise item
                outcome = authzen.Decider(connection, Interface.WEB).decide(item)
            except authzen.Invalid as exc:
                outcome = authzen.failed(exc)
            answers.append(outcome.answer())
        return answers

    return database.hot_read(work)


def same(answers: list[dict]) -> list[tuple]:
    """An answer without its evaluation id (new for each evaluation)."""
    return [
        (
            a["decision"],
            a["context"]["reason"],
            a["context"]["message"],
            a["context"].get("approval"),
        )
        for a in answers
    ]


@pytest.mark.parametrize("people", [1, PEOPLE], ids=["one person", "many people"])
def test_a_batch_costs_the_same_statements_whatever_its_size(database, org, people):
    """A person's gateway deciding a whole tools/list (of one server or several, by email,
    so the people are looked up once more by email) runs a few statements for the batch:
    as many for 500 evaluations as for 12, over one person or thirty."""
    subjects = org[:people]
    small, answers_small = statements_and_answers(
        database, gateway_batch(2 * len(SHAPES), subjects)
    )
    large, answers = statements_and_answers(database, gateway_batch(500, subjects))
    assert small == large <= MOST, (small, large)
    assert same(answers) == same(alone(database, gateway_batch(500, subjects)))
    assert same(answers_small) == same(alone(database, gateway_batch(2 * len(SHAPES), subjects)))
    reasons = {a["context"]["reason"] for a in answers}
    assert {"allow", "needs_approval", "blocked", "access_level_insufficient"} <= reasons
    assert {"unknown_resource", "ambiguous_tool", "invalid_request", "unknown_action"} <= reasons
    if people > 1:
        assert "user_inactive" in reasons


def test_the_decision_api_batch_costs_the_same_statements_whatever_its_size(database, org):
    def ask(size: int) -> tuple[int, list[decisions.Answer]]:
        questions = [
            decisions.Question(
                org[i % PEOPLE].partition("@")[0],
                f"server-{i % (SERVERS + 1)}",
                f"tool_{i % (TOOLS + 1):02d}",
                Interface.WEB,
            )
            for i in range(size)
        ]

        def work(connection: Any) -> tuple[int, list[decisions.Answer]]:
            with counted(connection) as seen:
                answers = decisions.decide_many(connection, questions)
            assert answers == [decisions.decide(connection, q) for q in questions]
            return len(seen), answers

        return database.hot_read(work)

    (small, _), (large, _) = ask(3), ask(100)
    assert small == large <= 4


def search_statements(database, person: str, server: int, limit: int) -> tuple[int, list]:
    query = authzen.search(
        "resource",
        {
            "subject": {"type": "identity", "id": person},
            "action": {"name": "tools/call"},
            "resource": {"type": "tool", "properties": {"mcp_server": uri(server)}},
            "page": {"limit": limit},
        },
    )

    def work(connection: Any) -> tuple[int, list]:
        with counted(connection) as seen:
            found = authzen.Searcher(authzen.Decider(connection, Interface.WEB)).run(query)
        return len(seen), found.results

    return database.hot_read(work)


def test_a_resource_search_page_costs_the_same_statements_whatever_its_size(database, org):
    """Which tools of this server may the person call: a page of 2 and a page of all 20
    cost the same statements, and hold the tools an evaluation allows, in order."""
    few, two = search_statements(database, org[0], 1, 2)
    many, every = search_statements(database, org[0], 1, 100)
    assert few == many <= 10, (few, many)
    allowed = [
        f"tool_{t:02d}" for t in range(TOOLS) if POLICIES[t % len(POLICIES)] == "always_allow"
    ]
    assert [r["id"] for r in every] == allowed
    assert every[:2] == two
    assert search_statements(database, org[7], 1, 100)[1] == []  # inactive
