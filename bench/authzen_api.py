"""Benchmark: the AuthZEN API beside POST /api/v1/decisions and a bare Flask endpoint.

The organisation of bench/decision_api.py (100,000 users in 10 groups mapped to 10
connectors: 1,000,000 memberships and live grants), plus one person holding 200 more
connectors of 20 tools each. Under the same gunicorn settings, wrk drives in alternating
rounds: the bare Flask endpoint, ``POST /api/v1/decisions`` and ``POST
/access/v1/evaluation`` (a random user, connector and action each), ``POST
/access/v1/evaluations`` with 100 evaluations for one random user and with 100
``tools/call`` evaluations (COAZ-MCP) of the 200-connector person, 20 tools of each of 5
servers named by resource URI (a gateway filtering a tools/list), and ``POST
/access/v1/search/resource`` for the 200-connector person's callable tools of one random
server. Medians over the rounds.

Needs ``wrk``. Run by hand:

    .venv/bin/python bench/authzen_api.py              # SQLite
    .venv/bin/python bench/authzen_api.py --postgres   # PostgreSQL on 127.0.0.1
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import insert, text, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.decision_api import (
    LUA,
    arguments,
    bench_database,
    free_port,
    run_rounds,
    seed,
    serve,
    stop,
)
from bench.fixtures import insert_connector
from provisioning.connectors.models import AccessLevel, Action, ActionKind, Connector, Policy
from provisioning.database import Database, utcnow
from provisioning.entitlements.models import Grant, Mapping
from provisioning.identity.models import Group, Membership, MembershipSource, User

WIDE_CONNECTORS, WIDE_TOOLS = 200, 20
SEARCHER = "searcher@bench.example"
WIDE_URI = "https://mcp.bench.example/wide-"

PRELUDE = """
math.randomseed(os.time())
local actions = {"search", "read_item", "comment", "update_item", "delete_item", "unknown_tool"}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
"""
EVALUATION = (
    PRELUDE
    + """
request = function()
  local body = string.format(
    '{"subject": {"type": "user", "id": "user%%06d@bench.example"}, '
    .. '"action": {"name": "%%s"}, "resource": {"type": "connector", "id": "connector-%%d"}, '
    .. '"context": {"interface": "web"}}',
    math.random(0, %(users)d - 1), actions[math.random(1, #actions)],
    math.random(0, %(connectors)d - 1))
  return wrk.format(nil, nil, nil, body)
end
"""
)
EVALUATIONS = (
    PRELUDE
    + """
request = function()
  local items = {}
  for i = 1, 100 do
    items[i] = string.format(
      '{"action": {"name": "%%s"}, "resource": {"type": "connector", "id": "connector-%%d"}}',
      actions[math.random(1, #actions)], math.random(0, %(connectors)d - 1))
  end
  local body = string.format(
    '{"subject": {"type": "user", "id": "user%%06d@bench.example"}, '
    .. '"context": {"interface": "web"}, "evaluations": [%%s]}',
    math.random(0, %(users)d - 1), table.concat(items, ", "))
  return wrk.format(nil, nil, nil, body)
end
"""
)
TOOLS_LIST = (
    PRELUDE
    + """
request = function()
  local items = {}
  local first = math.random(0, %(wide)d - 5)
  for i = 0, 99 do
    items[i + 1] = string.format(
      '{"resource": {"type": "tool", "id": "tool_%%02d", '
      .. '"properties": {"mcp_server": "%(uri)s%%03d"}}}',
      math.floor(i / 5), first + i %% 5)
  end
  local body = string.format(
    '{"subject": {"type": "identity", "id": "%(searcher)s"}, "action": {"name": "tools/call"}, '
    .. '"context": {"interface": "web"}, "evaluations": [%%s]}',
    table.concat(items, ", "))
  return wrk.format(nil, nil, nil, body)
end
"""
)
SEARCH = (
    PRELUDE
    + """
request = function()
  local body = string.format(
    '{"subject": {"type": "identity", "id": "%(searcher)s"}, "action": {"name": "tools/call"}, '
    .. '"resource": {"type": "tool", "properties": {"connector": "wide-%%03d"}}, '
    .. '"context": {"interface": "web"}}',
    math.random(0, %(wide)d - 1))
  return wrk.format(nil, nil, nil, body)
end
"""
)


def seed_wide(database: Database) -> None:
    """One person holding 200 connectors of 20 tools each (policies in turn)."""
    now = utcnow()
    policies = [Policy.ALWAYS_ALLOW, Policy.ALWAYS_ALLOW, Policy.NEEDS_APPROVAL, Policy.BLOCKED]
    with database.transaction() as session:
        user_id, group_id = uuid.uuid4(), uuid.uuid4()
        session.execute(
            insert(User).values(
                id=user_id,
                user_name=SEARCHER,
                user_name_key=SEARCHER,
                active=True,
                created_at=now,
                updated_at=now,
            )
        )
        session.execute(
            insert(Group).values(
                id=group_id,
                display_name="wide",
                display_name_key="wide",
                created_at=now,
                updated_at=now,
            )
        )
        session.execute(
            insert(Membership).values(
                user_id=user_id,
                group_id=group_id,
                present=True,
                source=MembershipSource.SCIM,
                published_at=now,
                updated_at=now,
            )
        )
        for c in range(WIDE_CONNECTORS):
            connector_id = insert_connector(session, f"wide-{c:03d}", ("web", "desktop"))
            session.execute(
                update(Connector)
                .where(Connector.id == connector_id)
                .values(resource_uri=f"{WIDE_URI}{c:03d}")
            )
            session.execute(
                insert(Action),
                [
                    {
                        "connector_id": connector_id,
                        "name": f"tool_{t:02d}",
                        "kind": ActionKind.READ if t % 2 else ActionKind.WRITE,
                        "org_policy": policies[t % len(policies)],
                        "created_at": now,
                        "updated_at": now,
                    }
                    for t in range(WIDE_TOOLS)
                ],
            )
            session.execute(
                insert(Mapping).values(
                    group_id=group_id,
                    connector_id=connector_id,
                    access_level=AccessLevel.READ_WRITE,
                    created_by="bench",
                    created_at=now,
                    updated_at=now,
                )
            )
            session.execute(
                insert(Grant).values(
                    user_id=user_id,
                    connector_id=connector_id,
                    access_level=AccessLevel.READ_WRITE,
                    granted_at=now,
                )
            )
    if database.dialect == "postgresql":
        with database.engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__.splitlines()[0]).parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-authzen-"))
    processes: list[subprocess.Popen] = []
    try:
        with bench_database(args.postgres, workdir) as (database, url):
            started = time.monotonic()
            token = seed(database, args.users, args.connectors)
            seed_wide(database)
            print(f"  seeded in {time.monotonic() - started:.0f} s", file=sys.stderr)
            values = {
                "token": token,
                "users": args.users,
                "connectors": args.connectors,
                "searcher": SEARCHER,
                "wide": WIDE_CONNECTORS,
                "uri": WIDE_URI,
            }
            auth = f'wrk.headers["Authorization"] = "Bearer {token}"'
            sizes = {"users": args.users, "connectors": args.connectors}
            bare_port, port = free_port(), free_port()
            processes.append(serve("bare_flask:app", {"DATABASE_URL": url}, bare_port))
            processes.append(serve(None, {"DATABASE_URL": url}, port))
            targets: dict[str, tuple[str, Path]] = {}
            access = "/access/v1"
            for name, base, path, script in [
                ("bare Flask JSON endpoint", bare_port, "/decide", LUA % {"auth": "", **sizes}),
                (
                    "POST /api/v1/decisions",
                    port,
                    "/api/v1/decisions",
                    LUA % {"auth": auth, **sizes},
                ),
                (f"POST {access}/evaluation", port, f"{access}/evaluation", EVALUATION % values),
                (
                    f"POST {access}/evaluations (100)",
                    port,
                    f"{access}/evaluations",
                    EVALUATIONS % values,
                ),
                (
                    f"POST {access}/evaluations (100 tools)",
                    port,
                    f"{access}/evaluations",
                    TOOLS_LIST % values,
                ),
                (
                    f"POST {access}/search/resource",
                    port,
                    f"{access}/search/resource",
                    SEARCH % values,
                ),
            ]:
                lua = workdir / f"{len(targets)}.lua"
                lua.write_text(script)
                targets[name] = (f"http://127.0.0.1:{base}{path}", lua)
            results = run_rounds(targets, args)
            stop(processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    ceiling = results["bare Flask JSON endpoint"]["loaded"]["rps"]
    decisions_p50 = results["POST /api/v1/decisions"]["single"]["p50"]
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\n{kind}, {args.users:,} users, {args.users * args.connectors:,} grants + one person "
        f"with {WIDE_CONNECTORS} connectors x {WIDE_TOOLS} tools; {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; wrk {args.connections} connections, medians of "
        f"{args.repeat} alternating rounds of {args.seconds} s\n"
    )
    print(
        "| endpoint | req/s | vs ceiling | p50 ms | p99 ms | 1 conn.: req/s | p50 ms | p99 ms "
        "| 1 conn. p50 vs decisions |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        loaded, single = r["loaded"], r["single"]
        print(
            f"| {name} | {loaded['rps']:,.0f} | {loaded['rps'] / ceiling:.2f}x "
            f"| {loaded['p50']:.2f} | {loaded['p99']:.2f} | {single['rps']:,.0f} "
            f"| {single['p50']:.2f} | {single['p99']:.2f} | {single['p50'] / decisions_p50:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
