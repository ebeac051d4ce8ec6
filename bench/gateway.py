"""Benchmark: the MCP gateway's added latency, tools/list filtering, and revocation → refusal.

Real parts on 127.0.0.1, as in tests/gateway: an upstream MCP server written with FastMCP
(3 tools, plus 200 more for the listing), the service (werkzeug's threaded server over the
app, AuthZEN answering), the gateway (FastMCP proxy and our middleware, uvicorn), and a
client on the official MCP SDK with a JWT from a local issuer. Measured, each in one kept
MCP session (2026-07-28 protocol, the SDK's default):

- ``tools/call`` of an allowed tool, direct to the upstream and through the gateway
  (p50/p99 over ``--calls``); the gateway caches no decision, so every call is "cold";
- one AuthZEN evaluation as the gateway asks it (its own HTTP client), alone;
- ``tools/list`` of 203 tools, direct and through the gateway (one AuthZEN batch of 203);
- revocation → refusal over ``--revocations`` people: each one's client makes an allowed
  call, the person is offboarded through ``POST /api/v1/offboardings`` (HR), and the time
  from that answer (the revocation committed) to the answer refusing the client's next
  call is recorded, and whether that call was refused (it must be, every time).

Run by hand:

    .venv/bin/python bench/gateway.py              # SQLite
    .venv/bin/python bench/gateway.py --postgres   # PostgreSQL on 127.0.0.1
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from bench.decision_api import bench_database
from provisioning.integrations.mcp_gateway import proxy
from provisioning.integrations.mcp_gateway.pdp import Pdp
from tests.api.authzen_fixture import group, person, serve
from tests.api.conftest import ISSUER, Issuer
from tests.gateway.servers import Background, Upstream, connector

SLUG = "records"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"p50 {statistics.median(ms):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms (n={len(ms)})"


def client(url: str, token: str | None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=10)
    return Client(streamable_http_client(url, http_client=http), cache=None)


NO_DECISION: list[str] = []  # calls the gateway refused for want of a decision (fail closed)


async def timed_calls(c: Client, n: int) -> list[float]:
    times = []
    async with c:
        await c.call_tool("read_record", {"id": "warm"})
        for i in range(n):
            started = time.perf_counter()
            try:
                await c.call_tool("read_record", {"id": str(i)})
            except MCPError as exc:
                NO_DECISION.append(exc.message)
                continue
            times.append(time.perf_counter() - started)
    return times


async def timed_lists(c: Client, n: int) -> tuple[list[float], int]:
    times, count = [], 0
    async with c:
        await c.list_tools()
        for _ in range(n):
            started = time.perf_counter()
            count = len((await c.list_tools()).tools)
            times.append(time.perf_counter() - started)
    return times, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--lists", type=int, default=50)
    parser.add_argument("--revocations", type=int, default=100)
    args = parser.parse_args()

    issuer = Issuer()
    upstream = Upstream(extra=200)
    with (
        tempfile.TemporaryDirectory() as workdir,
        bench_database(args.postgres, Path(workdir)) as (database, _),
    ):
        lives = serve(database, issuer, delivery_allowed_networks="127.0.0.0/8")
        live = next(lives)
        try:
            gate = Background()
            live.admin_post(
                "/connectors", connector(SLUG, mcp_url=upstream.url, resource_uri=gate.url)
            )
            live.admin_post(f"/connectors/{SLUG}/tools/sync", {"apply": True})
            people = [person(live, f"p{n:04d}") for n in range(args.revocations + 1)]
            for start in range(0, len(people), 10):  # groups of ten: quick to create
                staff = group(live, f"staff-{start}", people[start : start + 10])
                mapping = {"group_id": staff, "connector": SLUG, "access_level": "read_write"}
                live.admin_post("/mappings", mapping)
            pep = live.pep.headers["Authorization"].removeprefix("Bearer ")
            server, pdp = proxy.build(
                proxy.Settings(
                    connector=SLUG,
                    upstream_url=upstream.url,
                    resource=gate.url,
                    issuer=ISSUER,
                    jwks_url=issuer.url,
                    pdp_url=live.base,
                    pdp_token=pep,
                )
            )
            gate.start(server.http_app(path="/mcp"))
            for name in ("werkzeug", "provisioning.gateway", "provisioning.authzen"):
                logging.getLogger(name).setLevel(logging.WARNING)

            def token(who: str) -> str:
                return issuer.token(sub=f"{who}@example.com", aud=gate.url, client_id="bench")

            keeper = f"p{args.revocations:04d}"  # never offboarded; a fresh token each time
            direct = anyio.run(timed_calls, client(upstream.url, None), args.calls)
            through = anyio.run(timed_calls, client(gate.url, token(keeper)), args.calls)
            list_direct, n_direct = anyio.run(timed_lists, client(upstream.url, None), args.lists)
            list_through, n_through = anyio.run(
                timed_lists, client(gate.url, token(keeper)), args.lists
            )

            async def decisions(n: int) -> list[float]:
                alone = Pdp(live.base, pep, SLUG)  # the gateway's own is its loop's
                times = []
                for _ in range(n):
                    started = time.perf_counter()
                    await alone.decide(
                        f"p{args.revocations:04d}@example.com", "bench", "read_record"
                    )
                    times.append(time.perf_counter() - started)
                await alone.close()
                return times

            asked = anyio.run(decisions, args.calls)
            hr = {"Authorization": f"Bearer {issuer.token()}"}
            lags: list[float] = []
            refused = 0

            async def revoke(who: str) -> None:
                nonlocal refused
                c = client(gate.url, token(who))
                async with c:
                    await c.call_tool("read_record", {"id": "before"})
                    answer = await anyio.to_thread.run_sync(
                        lambda: httpx2.post(
                            f"{live.base}/api/v1/offboardings",
                            json={"userName": who, "reason": "bench"},
                            headers=hr,
                            timeout=30,
                        )
                    )
                    committed = time.perf_counter()
                    assert answer.status_code in (200, 201, 202), answer.text
                    try:
                        await c.call_tool("read_record", {"id": "after"})
                    except MCPError as exc:
                        refused += "user_inactive" in exc.message  # refused as a leaver
                    lags.append(time.perf_counter() - committed)

            failed: list[str] = []
            for n in range(args.revocations):
                try:
                    anyio.run(revoke, f"p{n:04d}")
                except BaseException as exc:  # the SDK's task group wraps what it raised
                    if not isinstance(exc, BaseExceptionGroup):
                        raise
                    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                        exc = exc.exceptions[0]
                    failed.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            anyio.run(pdp.close)
            gate.close()

            print(f"database: {'PostgreSQL' if args.postgres else 'SQLite'}; {platform.node()}")
            print(f"tools/call direct:        {summary(direct)}")
            print(f"tools/call via gateway:   {summary(through)}")
            added = statistics.median(through) - statistics.median(direct)
            print(f"  added by the gateway (p50): {added * 1000:.2f} ms")
            print(f"  of which the AuthZEN evaluation over HTTP: {summary(asked)}")
            print(f"tools/list direct ({n_direct} tools):   {summary(list_direct)}")
            print(f"tools/list via gateway ({n_through} shown): {summary(list_through)}")
            print(f"revocation committed -> refused call: {summary(lags)}")
            print(f"  refused on the first call after the commit: {refused}/{args.revocations}")
            for message in NO_DECISION:
                print(f"  an allowed call refused: {message}")
            for reason in failed:  # a revocation not measured, and why
                print(f"  not measured: {reason}")

        finally:
            live.app.extensions["provisioning.api.last_use"].flush()  # while the file is there
            lives.close()
    upstream.close()
    issuer.close()


if __name__ == "__main__":
    main()
