"""Benchmark: our SCIM service vs scim2-server's in-memory reference vs a bare Flask ceiling.

Loads 100,000 users and 5,000 groups (each user in one group) into our database
and, with the same ids, into scim2-server's ``InMemoryStorage`` behind its
``BearerTokenApplication``. The three servers run under gunicorn with the same
settings, all three up at once; wrk measures GET /Users/{id}, a userName eq
filter, a userName sw filter (matching 10 users) and POST /Users, one server at a
time, in alternating rounds (ours, reference, ceiling; again; again), so that load
from elsewhere on the host falls on the three alike. Each figure is the median of
the rounds; each ratio is the median of the ratios within a round.

    .venv/bin/python bench/scim_compare.py                      # SQLite file
    .venv/bin/python bench/scim_compare.py --database-url postgresql://postgres@127.0.0.1:5432/test

gunicorn loads this file as a module (``scim_compare:ours()`` and so on), with the
settings passed in BENCH_* environment variables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = ["-w", "2", "-k", "gthread", "--threads", "4", "--preload", "--log-level", "warning"]
SAMPLE = 1000  # ids and names the load generator picks from at random


# -- the data, the same for every server ---------------------------------------


def user_name(n: int) -> str:
    return f"user{n:06d}@example.com"


def user_doc(n: int, ident: str) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": ident,
        "userName": user_name(n),
        "externalId": f"00u{n:017d}",
        "displayName": f"User {n}",
        "name": {"givenName": "User", "familyName": str(n)},
        "emails": [{"value": user_name(n), "type": "work", "primary": True}],
        "active": True,
    }


def seed(url: str, users: int, groups: int) -> tuple[list[str], list[str], str]:
    """Bulk-load users, groups and memberships into a migrated database; returns ids and a token."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import insert

    from provisioning.audit.log import Origin, Source
    from provisioning.database import Database, utcnow
    from provisioning.identity.models import Group, Membership, User
    from provisioning.tokens import credentials

    database = Database(url)
    database.upgrade()
    now = utcnow()
    user_ids = [uuid.uuid4() for _ in range(users)]
    group_ids = [uuid.uuid4() for _ in range(groups)]
    with database.transaction() as session:
        for start in range(0, users, 5000):
            session.execute(
                insert(User),
                [
                    {
                        "id": user_ids[n],
                        "user_name": user_name(n),
                        "user_name_key": user_name(n),
                        "external_id": f"00u{n:017d}",
                        "display_name": f"User {n}",
                        "display_name_key": f"user {n}",
                        "given_name": "User",
                        "family_name": str(n),
                        "email": user_name(n),
                        "email_key": user_name(n),
                        "active": True,
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                        "scim_attributes": {
                            "emails": [{"value": user_name(n), "type": "work", "primary": True}]
                        },
                    }
                    for n in range(start, min(start + 5000, users))
                ],
            )
        session.execute(
            insert(Group),
            [
                {
                    "id": group_ids[g],
                    "display_name": f"group-{g}",
                    "display_name_key": f"group-{g}",
                    "external_id": f"00g{g:017d}",
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
                for g in range(groups)
            ],
        )
        for start in range(0, users, 5000):
            session.execute(
                insert(Membership),
                [
                    {
                        "user_id": user_ids[n],
                        "group_id": group_ids[n % groups],
                        "present": True,
                        "source": "scim",
                        "updated_at": now,
                    }
                    for n in range(start, min(start + 5000, users))
                ],
            )
        secret = credentials.create(
            session, "bench", ["scim:provision"], Origin("bench", Source.CLI)
        )
    if database.dialect == "postgresql":
        # Statistics, as a live database has them (autovacuum would gather them later).
        with database.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    database.dispose()
    return [str(i) for i in user_ids], [str(g) for g in group_ids], secret


# -- the three applications (called by gunicorn) -------------------------------


def ours():
    sys.path.insert(0, str(ROOT))
    from provisioning.settings import load
    from provisioning.web.app import create_app

    return create_app(load(database_url=os.environ["BENCH_DATABASE_URL"]))


def reference():
    """scim2-server's own test server: BearerTokenApplication over InMemoryStorage."""
    from scim2_models import Group, Meta, ResourceType
    from scim2_server.memory import InMemoryStorage
    from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
    from scim2_server.utils import load_default_provider
    from werkzeug.exceptions import NotFound
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    ids = json.loads(Path(os.environ["BENCH_IDS"]).read_text())
    provider = load_default_provider()
    provider.config.authentication_schemes = [BEARER_TOKEN_SCHEME]
    user_type = next(rt for rt in provider.resource_types if rt.id == "User")
    user_model = provider.model_for(user_type)
    storage = InMemoryStorage()
    now = dt.datetime.now(dt.UTC)
    resources = []
    for n, ident in enumerate(ids["users"]):
        user = user_model.model_validate(user_doc(n, ident))
        user.meta = Meta(resource_type="User", created=now, last_modified=now, version=f'W/"{n}"')
        resources.append(user)
    groups = len(ids["groups"])
    members: dict[int, list[dict[str, str]]] = {}
    for n, ident in enumerate(ids["users"]):
        members.setdefault(n % groups, []).append({"value": ident})
    for g, ident in enumerate(ids["groups"]):
        group = Group.model_validate(
            {"id": ident, "displayName": f"group-{g}", "members": members.get(g, [])}
        )
        group.meta = Meta(resource_type="Group", created=now, last_modified=now, version='W/"0"')
        resources.append(group)
    storage.resources = resources
    _ = ResourceType
    application = BearerTokenApplication(
        storage, provider, bearer_tokens=[os.environ["BENCH_TOKEN"]]
    )
    # It serves /v2/...; mount it under /scim like ours.
    return DispatcherMiddleware(NotFound(), {"/scim": application})


def ceiling():
    """A bare Flask app answering the same requests with canned JSON: the ceiling."""
    from flask import Flask, Response, request

    app = Flask("ceiling")
    token = f"Bearer {os.environ['BENCH_TOKEN']}"
    user = json.dumps(user_doc(1, str(uuid.uuid4())))
    listing = json.dumps(
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 1,
            "startIndex": 1,
            "itemsPerPage": 1,
            "Resources": [json.loads(user)],
        }
    )

    def answer(body: str, status: int = 200) -> Response:
        if request.headers.get("Authorization") != token:
            return Response("{}", status=401, mimetype="application/scim+json")
        return Response(body, status=status, mimetype="application/scim+json")

    app.add_url_rule("/scim/v2/Users/<ident>", "get", lambda ident: answer(user))
    app.add_url_rule("/scim/v2/Users", "search", lambda: answer(listing))
    app.add_url_rule(
        "/scim/v2/Users",
        "create",
        lambda: answer(request.get_data() and user, 201),
        methods=["POST"],
    )
    return app


# -- load generation ---------------------------------------------------------


LUA = {
    "get_by_id": """
ids = {%(ids)s}
request = function()
  return wrk.format("GET", "/scim/v2/Users/" .. ids[math.random(#ids)])
end
""",
    "filter_eq": """
names = {%(names)s}
request = function()
  return wrk.format("GET", "/scim/v2/Users?filter=userName%%20eq%%20%%22" ..
    names[math.random(#names)] .. "%%22")
end
""",
    "post": """
counter = 0
tag = "0"
threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tag", tostring(os.time()) .. "-" .. threads)
end
request = function()
  counter = counter + 1
  local body = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],' ..
    '"userName":"new-' .. tag .. '-' .. counter .. '@example.com",' ..
    '"name":{"givenName":"New","familyName":"User"},"active":true,' ..
    '"emails":[{"value":"new-' .. tag .. '-' .. counter .. '@example.com","type":"work"}]}'
  return wrk.format("POST", "/scim/v2/Users", nil, body)
end
""",
    "filter_sw": """
prefixes = {%(prefixes)s}
request = function()
  return wrk.format("GET", "/scim/v2/Users?filter=userName%%20sw%%20%%22" ..
    prefixes[math.random(#prefixes)] .. "%%22")
end
""",
}


def lua_list(values: list[str]) -> str:
    return ",".join(json.dumps(v) for v in values)


def wrk(port: int, script: Path, token: str, duration: int, connections: int) -> dict[str, float]:
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
        "-H",
        "Content-Type: application/scim+json",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s|m)\b", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s|m)\b", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
    return {
        "rps": rps,
        "p50": float(p50.group(1)) * scale[p50.group(2)],
        "p99": float(p99.group(1)) * scale[p99.group(2)],
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def start(name: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        *GUNICORN,
        "-b",
        f"127.0.0.1:{port}",
        "--chdir",
        str(ROOT / "bench"),
        f"scim_compare:{name}()",
    ]
    process = subprocess.Popen(command, env={**os.environ, **env})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/scim/v2/Users/x", timeout=1)
        except urllib.error.HTTPError:
            return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{name} did not start")


def check(port: int, token: str, users: list[str]) -> None:
    """Each server answers the measured requests correctly before it is measured."""

    def get(path: str) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())

    assert get(f"/scim/v2/Users/{users[7]}")["userName"] in (user_name(7), user_name(1))
    eq = urllib.parse.quote(f'userName eq "{user_name(7)}"')
    assert get(f"/scim/v2/Users?filter={eq}")["totalResults"] == 1
    sw = urllib.parse.quote(f'userName sw "{user_name(7)[:9]}"')
    assert get(f"/scim/v2/Users?filter={sw}")["totalResults"] == 10


TARGETS = {
    "get_by_id": ("GET /Users/{id}", "≥ 1.0x reference, ≥ 0.5x ceiling"),
    "filter_eq": ('filter=userName eq "…"', "≥ 1.5x reference"),
    "filter_sw": ('filter=userName sw "…" (10 hits)', "≥ 100x reference"),
    "post": ("POST /Users", "≥ 0.8x reference"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=5_000)
    parser.add_argument("--duration", type=int, default=6, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per request")
    parser.add_argument("--database-url", help="PostgreSQL URL (a schema is made and dropped)")
    parser.add_argument(
        "--only", nargs="+", choices=list(TARGETS), help="measure these requests only"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="scim-bench-"))
    schema = None
    try:
        if args.database_url:
            from sqlalchemy import create_engine, text

            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(
                args.database_url.replace("postgresql://", "postgresql+psycopg://")
            )
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
            admin.dispose()
            url = f"{args.database_url}?options=-csearch_path%3D{schema}"
            label = "PostgreSQL"
        else:
            url = f"sqlite:///{workdir / 'bench.db'}"
            label = "SQLite"
        started = time.monotonic()
        user_ids, group_ids, token = seed(
            url.replace("postgresql://", "postgresql+psycopg://"), args.users, args.groups
        )
        print(
            f"seeded {args.users} users, {args.groups} groups in {time.monotonic() - started:.1f} s"
        )
        ids_file = workdir / "ids.json"
        ids_file.write_text(json.dumps({"users": user_ids, "groups": group_ids}))
        sample = list(range(0, args.users, max(1, args.users // SAMPLE)))[:SAMPLE]
        scripts = {}
        for name, template in LUA.items():
            if args.only and name not in args.only:
                continue
            path = workdir / f"{name}.lua"
            path.write_text(
                template
                % {
                    "ids": lua_list([user_ids[n] for n in sample]),
                    "names": lua_list([user_name(n) for n in sample]),
                    "prefixes": lua_list([user_name(n)[:9] for n in sample]),
                }
            )
            scripts[name] = path
        env = {"BENCH_DATABASE_URL": url, "BENCH_IDS": str(ids_file), "BENCH_TOKEN": token}
        servers = (("ours", 8711), ("reference", 8712), ("ceiling", 8713))
        processes = {}
        rounds: dict[str, dict[str, list[dict[str, float]]]] = {}
        try:
            for server, port in servers:
                started = time.monotonic()
                processes[server] = start(server, port, env)
                print(f"{server} up in {time.monotonic() - started:.1f} s")
                if server != "ceiling":
                    check(port, token, user_ids)
            for name, script in scripts.items():
                # A scan takes seconds on the reference: measure it longer, and last.
                duration = args.duration * (2 if name == "filter_sw" else 1)
                for round_ in range(args.rounds):
                    for server, port in servers:
                        if name != "filter_sw":
                            wrk(port, script, token, 1, args.connections)  # warm up
                        measured = wrk(port, script, token, duration, args.connections)
                        rounds.setdefault(name, {}).setdefault(server, []).append(measured)
                        print(server, name, round_ + 1, measured)
        finally:
            for process in processes.values():
                process.terminate()
                process.wait(30)
        results = {name: summary(by_server) for name, by_server in rounds.items()}
        print_table(results, label, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if schema:
            from sqlalchemy import create_engine, text

            admin = create_engine(
                args.database_url.replace("postgresql://", "postgresql+psycopg://")
            )
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


def summary(by_server: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Per server the round of median throughput; and the per-round ratios of ours."""
    out: dict[str, Any] = {}
    for server, measured in by_server.items():
        out[server] = sorted(measured, key=lambda m: m["rps"])[len(measured) // 2]
    for other in ("reference", "ceiling"):
        out[f"ratios_{other}"] = [
            o["rps"] / t["rps"] if t["rps"] else 0.0
            for o, t in zip(by_server["ours"], by_server[other], strict=True)
        ]
    return out


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def print_table(results, label: str, args) -> None:
    print()
    print(
        f"{label}; {args.users:,} users, {args.groups:,} groups; wrk -t2 -c{args.connections} "
        f"-d{args.duration}s, median of {args.rounds} alternating rounds; "
        f"gunicorn {' '.join(GUNICORN)}; {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}"
    )
    print()
    print(
        "| request | ours req/s (p50 / p99 ms) | reference req/s (p50 / p99 ms) | ceiling req/s "
        "| ours ÷ reference | ours ÷ ceiling | target |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, (title, target) in TARGETS.items():
        if name not in results:  # not measured (--only)
            continue
        row = results[name]
        o, r, c = row["ours"], row["reference"], row["ceiling"]

        def cell(m):
            errors = f", {int(m['errors'])} non-2xx" if m["errors"] else ""
            return f"{m['rps']:,.2f} ({m['p50']:.1f} / {m['p99']:.1f}{errors})"

        def ratios(values: list[float]) -> str:
            each = ", ".join(f"{v:.2f}" for v in values)
            return f"**{median(values):,.2f}x** ({each})"

        print(
            f"| {title} | {cell(o)} | {cell(r)} | {c['rps']:,.0f} "
            f"| {ratios(row['ratios_reference'])} | {ratios(row['ratios_ceiling'])} | {target} |"
        )


if __name__ == "__main__":
    main()
