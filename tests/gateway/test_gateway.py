"""The whole loop over real HTTP on 127.0.0.1: an upstream MCP server written with FastMCP,
the service (AuthZEN, SCIM, the admin API), the gateway in front of the upstream, and a
client on the official MCP SDK with a person's JWT from a test issuer whose JWKS is served.
The upstream records the calls that reach it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import mcp_types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from sqlalchemy import select

from provisioning.connectors.models import Action
from provisioning.integrations.mcp_gateway import proxy
from provisioning.oversight.models import Finding, FindingKind, FindingState
from tests.api.authzen_fixture import Live, group, person, serve
from tests.api.conftest import ISSUER
from tests.gateway.servers import Background, Upstream, connector

SLUG = "records"
LOOPBACK = "127.0.0.0/8"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def live(database, issuer) -> Iterator[Live]:
    yield from serve(database, issuer, delivery_allowed_networks=LOOPBACK)


class Gateway:
    def __init__(self, live: Live, issuer: Any, upstream: Upstream, pdp_url: str | None = None):
        self.background = Background()
        self.resource = self.background.url
        self.issuer = issuer
        self.live = live
        live.admin_post(
            "/connectors", connector(SLUG, mcp_url=upstream.url, resource_uri=self.resource)
        )
        server, self.pdp = proxy.build(
            proxy.Settings(
                connector=SLUG,
                upstream_url=upstream.url,
                resource=self.resource,
                issuer=ISSUER,
                jwks_url=issuer.url,
                pdp_url=pdp_url or live.base,
                pdp_token=live.pep.headers["Authorization"].removeprefix("Bearer "),
            )
        )
        self.background.start(server.http_app(path="/mcp"))

    def token(self, who: str, **claims: Any) -> str:
        return self.issuer.token(
            sub=f"{who}@example.com", aud=self.resource, client_id="claude-code", **claims
        )

    def session(
        self, who: str, answer: str | None = "accept", mode: str = "auto", **claims: Any
    ) -> Any:
        """A client's session through the gateway as ``who`` (an async context manager);
        ``answer`` is what its person answers to a confirmation (None: cannot be asked)."""
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.token(who, **claims)}"})

        async def confirm(context: Any, params: Any) -> mcp_types.ElicitResult:
            asked.append(params.message)
            content = {"confirm": True} if answer == "accept" else None
            return mcp_types.ElicitResult(action=answer, content=content)

        asked: list[str] = []
        client = Client(
            streamable_http_client(self.resource, http_client=http),
            elicitation_callback=confirm if answer else None,
            cache=None,
            mode=mode,
        )
        client.asked = asked  # type: ignore[attr-defined]
        return client

    def close(self) -> None:
        self.background.close()


@pytest.fixture
def people(live) -> dict[str, str]:
    ids = {name: person(live, name) for name in ("alice", "bob")}
    writers = group(live, "record-writers", [ids["alice"]])
    readers = group(live, "record-readers", [ids["bob"]])
    ids["writers"], ids["readers"] = writers, readers
    return ids


@pytest.fixture
def gateway(live, issuer, upstream, people) -> Iterator[Gateway]:
    gw = Gateway(live, issuer, upstream)
    synced = live.admin_post(f"/connectors/{SLUG}/tools/sync", {})
    live.admin_post(f"/connectors/{SLUG}/tools/sync", {"apply": True, "digest": synced["digest"]})
    for group_id, level in ((people["writers"], "read_write"), (people["readers"], "read")):
        live.admin_post(
            "/mappings", {"group_id": group_id, "connector": SLUG, "access_level": level}
        )
    yield gw
    gw.close()
    anyio.run(gw.pdp.close)


def run(coroutine: Any) -> Any:
    return anyio.run(lambda: coroutine)


async def names(client: Client) -> set[str]:
    async with client:
        return {t.name for t in (await client.list_tools()).tools}


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    async with client:
        return await client.call_tool(tool, arguments)


def mcp_error(exc: BaseException) -> MCPError:
    """The MCPError a client raised (the SDK's task group may wrap it in a group)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    assert isinstance(exc, MCPError), exc
    return exc


def refused(client: Client, tool: str) -> MCPError:
    with pytest.raises(BaseException) as caught:
        run(call(client, tool, id="1"))
    return mcp_error(caught.value)


# -- the catalogue from the server itself -------------------------------------------------


def test_sync_proposes_actions_from_annotations_and_applies_what_was_shown(live, upstream):
    live.admin_post("/connectors", connector(SLUG, mcp_url=upstream.url))
    shown = live.admin_post(f"/connectors/{SLUG}/tools/sync", {})
    proposed = {c["name"]: (c["kind"], c["org_policy"]) for c in shown["added"]}
    assert proposed == {
        "read_record": ("read", "always_allow"),
        "delete_record": ("write", "needs_approval"),
        "update_record": ("write", "always_allow"),
    }
    assert {c["name"]: c["open_world"] for c in shown["added"]}["read_record"] is False
    assert not shown["applied"] and shown["changed"] == shown["vanished"] == []
    with live.database.reader() as session:
        assert session.scalars(select(Action)).all() == []  # a dry run catalogues nothing
        open_ = session.scalars(
            select(Finding.subject_id).where(
                Finding.kind == FindingKind.UNCATALOGUED_TOOL, Finding.state == FindingState.OPEN
            )
        ).all()
    assert sorted(open_) == [f"{SLUG}/{n}" for n in sorted(proposed)]

    upstream.add("archive_record", annotations={"destructiveHint": True})
    stale = live.admin.post(
        f"{live.base}/api/v1/connectors/{SLUG}/tools/sync",
        json={"apply": True, "digest": shown["digest"]},
        timeout=10,
    )
    assert stale.status_code == 409  # the server changed since the diff was shown
    with live.database.reader() as session:
        assert session.scalars(select(Action)).all() == []

    again = live.admin_post(f"/connectors/{SLUG}/tools/sync", {})
    applied = live.admin_post(
        f"/connectors/{SLUG}/tools/sync", {"apply": True, "digest": again["digest"]}
    )
    assert applied["applied"] and len(applied["added"]) == 4
    with live.database.reader() as session:
        rows = {
            a.name: (a.kind, a.org_policy, a.annotations) for a in session.scalars(select(Action))
        }
        still_open = session.scalars(
            select(Finding).where(
                Finding.kind == FindingKind.UNCATALOGUED_TOOL, Finding.state == FindingState.OPEN
            )
        ).all()
    assert rows["archive_record"][:2] == ("write", "needs_approval")
    assert rows["read_record"][2] == {"readOnlyHint": True, "openWorldHint": False}
    assert still_open == []

    upstream.mcp.local_provider.remove_tool("update_record")
    gone = live.admin_post(f"/connectors/{SLUG}/tools/sync", {"apply": True})
    assert [c["name"] for c in gone["vanished"]] == ["update_record"]
    with live.database.reader() as session:
        flagged = session.scalar(select(Action).where(Action.name == "update_record"))
        assert flagged is not None and flagged.vanished_at is not None  # flagged, not deleted


def test_an_mcp_url_the_egress_policy_refuses_is_a_422(live):
    response = live.admin.post(
        f"{live.base}/api/v1/connectors",
        json={
            "slug": "internal",
            "name": "Internal",
            "kind": "remote",
            "capability": "read",
            "publisher": "internal",
            "interfaces": ["web"],
            "mcp_url": "http://169.254.169.254/mcp",
        },
        timeout=10,
    )
    assert response.status_code == 422 and "metadata" in response.json()["detail"]


# -- the gateway ------------------------------------------------------------------------


def test_tools_list_shows_what_the_person_may_call(gateway):
    assert run(names(gateway.session("alice"))) == {"read_record", "update_record", "delete_record"}
    assert run(names(gateway.session("bob"))) == {"read_record"}


def test_an_allowed_call_reaches_the_upstream_and_a_refused_one_does_not(gateway, upstream):
    result = run(call(gateway.session("bob"), "read_record", id="7"))
    assert not result.is_error and upstream.calls == [("read_record", {"id": "7"})]
    error = refused(gateway.session("bob"), "update_record")
    assert error.code == proxy.REFUSED and "access_level_insufficient" in error.message
    assert upstream.calls == [("read_record", {"id": "7"})]


@pytest.mark.parametrize("answer", ["accept", "decline", "cancel"])
def test_a_call_that_needs_approval_asks_the_person(gateway, upstream, answer):
    client = gateway.session("alice", answer=answer)
    if answer == "accept":
        result = run(call(client, "delete_record", id="9"))
        assert not result.is_error and upstream.calls == [("delete_record", {"id": "9"})]
    else:
        assert refused(client, "delete_record").code == proxy.REFUSED
        assert upstream.calls == []
    assert len(client.asked) == 1 and "delete_record" in client.asked[0]


@pytest.mark.parametrize("answer", ["accept", "decline"])
def test_an_older_client_is_asked_with_elicitation_create(gateway, upstream, answer):
    client = gateway.session("alice", answer=answer, mode="legacy")  # 2025-11-25: a request
    if answer == "accept":
        assert not run(call(client, "delete_record", id="3")).is_error
        assert upstream.calls == [("delete_record", {"id": "3"})]
    else:
        assert refused(client, "delete_record").code == proxy.REFUSED and upstream.calls == []
    assert len(client.asked) == 1


def test_a_client_that_cannot_ask_is_refused_a_call_that_needs_approval(gateway, upstream):
    error = refused(gateway.session("alice", answer=None), "delete_record")
    assert "confirmation" in error.message and upstream.calls == []


def test_the_leaver_is_cut_off_at_the_next_call(gateway, upstream, live, people):
    client = gateway.session("alice")

    async def session() -> float:
        async with client:
            await client.call_tool("read_record", {"id": "1"})
            response = await anyio.to_thread.run_sync(
                lambda: httpx2.post(
                    f"{live.base}/api/v1/offboardings",
                    json={"userName": "alice", "reason": "left"},
                    headers={"Authorization": f"Bearer {gateway.issuer.token()}"},  # HR
                    timeout=10,
                )
            )
            committed = time.perf_counter()
            assert response.status_code in (200, 201, 202), response.text
            with pytest.raises(BaseException) as caught:
                await client.call_tool("read_record", {"id": "2"})
            assert "user_inactive" in mcp_error(caught.value).message
            return time.perf_counter() - committed

    elapsed = run(session())
    print(f"offboarding committed -> refused call: {elapsed * 1000:.1f} ms")
    assert upstream.calls == [("read_record", {"id": "1"})]


def test_resources_are_for_those_who_may_use_the_connector(gateway, live):
    async def read(client: Client) -> Any:
        async with client:
            return await client.read_resource("records://index")

    assert "7, 9" in str(run(read(gateway.session("bob"))))
    person(live, "carol")  # no group: no access to the connector
    with pytest.raises(BaseException) as caught:
        run(read(gateway.session("carol")))
    assert "no_grant" in mcp_error(caught.value).message


def test_no_token_is_a_401_naming_the_protected_resource_metadata(gateway):
    response = httpx2.post(gateway.resource, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer") and "resource_metadata=" in challenge
    metadata_url = challenge.split('resource_metadata="')[1].split('"')[0]
    metadata = httpx2.get(metadata_url).json()
    assert metadata["resource"] == gateway.resource
    assert metadata["authorization_servers"] == [ISSUER]


def test_a_token_for_another_audience_is_a_401(gateway):
    token = gateway.issuer.token(sub="alice@example.com", aud="https://other.example/mcp")
    response = httpx2.post(
        gateway.resource,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401


def test_the_service_down_refuses_every_call(live, issuer, upstream, people):
    gw = Gateway(live, issuer, upstream, pdp_url="http://127.0.0.1:9")
    try:
        error = refused(gw.session("alice"), "read_record")
        assert error.code == proxy.NO_DECISION and "cannot be reached" in error.message
        assert upstream.calls == []
    finally:
        gw.close()
        anyio.run(gw.pdp.close)


def test_a_tool_not_catalogued_is_answered_by_the_unknown_action_policy(gateway, upstream, live):
    upstream.add("export_records")
    shown = live.admin_post(f"/connectors/{SLUG}/tools/sync", {})
    assert [c["name"] for c in shown["added"]] == ["export_records"]
    with live.database.reader() as session:
        finding = session.scalar(
            select(Finding).where(
                Finding.kind == FindingKind.UNCATALOGUED_TOOL, Finding.state == FindingState.OPEN
            )
        )
    assert finding is not None and finding.subject_id == f"{SLUG}/export_records"
    # needs_approval by default: listed, and calling it asks the person first.
    assert "export_records" in run(names(gateway.session("alice")))
    client = gateway.session("alice", answer="decline")
    assert refused(client, "export_records").code == proxy.REFUSED and client.asked
    assert upstream.calls == []


def test_a_call_an_approver_approves_opens_a_task_and_goes_through_once_approved(
    gateway, upstream, live
):
    """update_record needs the owner's yes to each call: the gateway opens the task and
    refuses; Olga approves; the same call goes through, another argument does not."""
    olga = person(live, "olga")
    patched = live.admin.patch(
        f"{live.base}/api/v1/connectors/{SLUG}", json={"owner": "olga@example.com"}, timeout=10
    )
    assert patched.status_code == 200, patched.text
    policy = {"approvers": ["owner"], "max_days": 7, "decide_within_days": 1}
    put = live.admin.put(f"{live.base}/api/v1/request-policies/{SLUG}", json=policy, timeout=10)
    assert put.status_code == 200, put.text
    action = live.admin.patch(
        f"{live.base}/api/v1/connectors/{SLUG}/actions/update_record",
        json={"org_policy": "needs_approval", "requires_approver": True},
        timeout=10,
    )
    assert action.status_code == 200, action.text
    assert "update_record" in run(names(gateway.session("alice")))  # still listed
    first = pending(gateway, id="1", text="x")
    assert first.code == proxy.REFUSED and "approval task" in first.message
    assert "pending" in first.message and upstream.calls == []
    task_id = first.data["task"]["id"]
    again = pending(gateway, id="1", text="x")  # the same task, still pending
    assert again.data["task"]["id"] == task_id
    with live.database.reader() as session:
        from provisioning.requests.models import AccessRequest

        request_id = session.scalar(
            select(AccessRequest.id).where(AccessRequest.task_id == task_id)
        )
        assert session.query(AccessRequest).count() == 1
    decided = live.admin.post(
        f"{live.base}/api/v1/requests/{request_id}/decision",
        json={"decision": "approve"},
        headers={"Authorization": f"Bearer {gateway.issuer.token(sub='olga@example.com')}"},
        timeout=10,
    )
    assert decided.status_code == 200 and olga, decided.text
    result = run(call(gateway.session("alice"), "update_record", id="1", text="x"))
    done = [("update_record", {"id": "1", "text": "x"})]
    assert not result.is_error and upstream.calls == done
    other = pending(gateway, id="1", text="y")  # other arguments: another task, pending
    assert other.data["task"]["id"] != task_id and upstream.calls == done


def pending(gateway: Gateway, **arguments: Any) -> MCPError:
    """Alice's update_record with these arguments, refused while its approval is pending."""
    with pytest.raises(BaseException) as caught:
        run(call(gateway.session("alice"), "update_record", **arguments))
    error = mcp_error(caught.value)
    assert error.code == proxy.REFUSED and "pending" in error.message, error.message
    return error
