"""A connector's tool catalogue against its MCP server's list: proposals, the diff, apply,
and hostile listings (refused whole, nothing half-catalogued); the listing edge against
servers that hang or answer garbage, over real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from provisioning.connectors import tools
from provisioning.connectors.governance import GovernanceError
from provisioning.connectors.models import Action, Connector
from provisioning.delivery.egress import Egress
from provisioning.integrations.mcp_gateway import upstream
from provisioning.text import problem
from tests.org import Org

LOOPBACK = Egress((ip_network("127.0.0.0/8"),))


def listed(*specs: tuple[str, dict[str, Any]]) -> list[tools.Tool]:
    return [tools.tool(name, f"{name} things", hints) for name, hints in specs]


READ = ("read_record", {"readOnlyHint": True})
DELETE = ("delete_record", {"destructiveHint": True})
UPDATE = ("update_record", {})


def actions(session) -> dict[str, Action]:
    return {a.name: a for a in session.scalars(select(Action))}


def test_proposals_follow_the_annotations_and_apply_writes_them(database, origin):
    with database.transaction() as session:
        connector = Org(session, origin).connector("records")
        found = tools.sync(session, origin, connector, listed(READ, DELETE, UPDATE))
        assert {c.name: (c.kind, c.org_policy) for c in found.added} == {
            "read_record": ("read", "always_allow"),
            "delete_record": ("write", "needs_approval"),
            "update_record": ("write", "always_allow"),
        }
        assert actions(session) == {}
        tools.sync(session, origin, connector, listed(READ, DELETE, UPDATE), confirm=True)
        session.expire_all()
        assert set(actions(session)) == {"read_record", "delete_record", "update_record"}
        again = tools.diff(session.get(Connector, connector.id), listed(READ, DELETE, UPDATE))
        assert again.changes == [] and again.unchanged == 3


def test_a_changed_description_and_a_vanished_tool(database, origin):
    with database.transaction() as session:
        connector = Org(session, origin).connector("records")
        tools.sync(session, origin, connector, listed(READ, DELETE), confirm=True)
        session.expire_all()
        connector = session.get(Connector, connector.id)
        now = [tools.tool("read_record", "reads better", {"readOnlyHint": True})]
        found = tools.sync(session, origin, connector, now, confirm=True)
        assert [c.name for c in found.changed] == ["read_record"]
        assert [c.name for c in found.vanished] == ["delete_record"]
        session.expire_all()
        rows = actions(session)
        assert rows["read_record"].description == "reads better"
        assert rows["delete_record"].vanished_at is not None  # flagged, still catalogued
        back = tools.sync(session, origin, session.get(Connector, connector.id), listed(DELETE))
        assert [c.name for c in back.changed] == ["delete_record"]  # back after vanishing


def test_a_write_tool_on_a_read_only_connector_is_refused_whole(database, origin):
    with database.transaction() as session:
        connector = Org(session, origin).connector("reader", capability="read")
    with pytest.raises(GovernanceError), database.transaction() as session:
        connector = session.get(Connector, connector.id)
        tools.sync(session, origin, connector, listed(READ, DELETE), confirm=True)
    with database.reader() as session:
        assert actions(session) == {}  # nothing half-catalogued


@pytest.mark.parametrize(
    "name", ["", "bad name", "evil\x00tool", "x" * 201, "naïve", 42, None, "a\nb"]
)
def test_a_name_the_catalogue_cannot_hold_refuses_the_listing(name):
    with pytest.raises(tools.ToolListRefused):
        tools.tool(name)


def test_too_many_tools_or_a_name_twice_are_refused():
    with pytest.raises(tools.ToolListRefused, match="at most"):
        tools.listing([tools.tool(f"t{n}") for n in range(tools.MAX_TOOLS + 1)])
    with pytest.raises(tools.ToolListRefused, match="twice"):
        tools.listing([tools.tool("same"), tools.tool("same")])


@given(description=st.text(max_size=3000), title=st.text(max_size=300), hint=st.from_type(object))
def test_hostile_descriptions_and_hints_are_cleaned(description, title, hint):
    cleaned = tools.tool("t", description, {"title": title, "readOnlyHint": hint, "x": 1})
    if cleaned.description is not None:
        assert len(cleaned.description) <= tools.DESCRIPTION_LENGTH
        assert problem(cleaned.description) is None
    assert set(cleaned.annotations) <= set(tools.HINTS)
    assert "readOnlyHint" not in cleaned.annotations or isinstance(hint, bool)


def test_a_100_kb_description_is_cut():
    assert len(tools.tool("t", "x" * 100_000).description or "") == tools.DESCRIPTION_LENGTH


# -- the listing edge ------------------------------------------------------------------


def test_a_server_that_hangs_is_given_up_on():
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)  # accepts, never answers
    try:
        started = time.monotonic()
        with pytest.raises(upstream.Unreachable, match="no complete tool list"):
            upstream.list_tools(
                f"http://127.0.0.1:{hanging.getsockname()[1]}/mcp", LOOPBACK, timeout=1
            )
        assert time.monotonic() - started < 5
    finally:
        hanging.close()


def test_a_server_that_answers_garbage_is_unreachable():
    class Garbage(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b"\x00\xffnot json at all"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_DELETE = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(upstream.Unreachable):
            upstream.list_tools(f"http://127.0.0.1:{server.server_port}/mcp", LOOPBACK, timeout=3)
    finally:
        server.shutdown()
        server.server_close()


def test_an_internal_address_is_refused_unless_allowed():
    with pytest.raises(upstream.Unreachable, match="egress"):
        upstream.list_tools("http://127.0.0.1:9/mcp", Egress(), timeout=3)
