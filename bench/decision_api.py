"""Benchmark: POST /api/v1/decisions against a bare Flask JSON endpoint, same gunicorn settings.

Seeds 100,000 users in 10 groups mapped to 10 connectors (1,000,000 memberships
and 1,000,000 live grants, bulk-inserted with Core inserts), starts gunicorn
with deploy/gunicorn.conf.py for the service and then for bench/bare_flask.py,
and drives each with wrk (random user, connector and action per request, a
static API token on the service). Reports throughput at saturation and the
latency distribution at saturation and with a single connection.

Needs ``wrk`` (``apt-get install wrk``). Run by hand:

    .venv/bin/python bench/decision_api.py              # SQLite
    .venv/bin/python bench/decision_api.py --postgres   # PostgreSQL on 127.0.0.1
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import insert_connector
from provisioning.audit.log import Origin, Source
from provisioning.connectors.models import (
    AccessLevel,
    Action,
    ActionKind,
    Policy,
)
from provisioning.database import Database, utcnow
from provisioning.entitlements.models import Grant, Mapping
from provisioning.identity.models import Group, Membership, MembershipSource, User
from provisioning.tokens import credentials

ROOT = Path(__file__).resolve().parent.parent
BATCH = 5000
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ACTIONS = [
    ("search", ActionKind.READ, Policy.ALWAYS_ALLOW),
    ("read_item", ActionKind.READ, Policy.ALWAYS_ALLOW),
    ("comment", ActionKind.WRITE, Policy.NEEDS_APPROVAL),
    ("update_item", ActionKind.WRITE, Policy.NEEDS_APPROVAL),
    ("delete_item", ActionKind.WRITE, Policy.BLOCKED),
]


def seed(database: Database, users: int, connectors: int) -> str:
    """Bulk-insert the organisation; return a static token with decisions:check."""
    now = utcnow()
    with database.transaction() as session:
        ids = [uuid.uuid4() for _ in range(users)]
        for start in range(0, users, BATCH):
            session.execute(
                insert(User),
                [
                    {
                        "id": ids[i],
                        "user_name": f"user{i:06d}@bench.example",
                        "user_name_key": f"user{i:06d}@bench.example",
                        "active": True,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(start, min(start + BATCH, users))
                ],
            )
        for c in range(connectors):
            connector_id = insert_connector(session, f"connector-{c}", ("web", "desktop"))
            session.execute(
                insert(Action),
                [
                    {
                        "connector_id": connector_id,
                        "name": name,
                        "kind": kind,
                        "org_policy": policy,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for name, kind, policy in ACTIONS
                ],
            )
            group_id = uuid.uuid4()
            session.execute(
                insert(Group).values(
                    id=group_id,
                    display_name=f"group-{c}",
                    display_name_key=f"group-{c}",
                    created_at=now,
                    updated_at=now,
                )
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
            for start in range(0, users, BATCH):
                chunk = ids[start : start + BATCH]
                session.execute(
                    insert(Membership),
                    [
                        {
                            "user_id": u,
                            "group_id": group_id,
                            "present": True,
                            "source": MembershipSource.SCIM,
                            "published_at": now,
                            "updated_at": now,
                        }
                        for u in chunk
                    ],
                )
                session.execute(
                    insert(Grant),
                    [
                        {
                            "user_id": u,
                            "connector_id": connector_id,
                            "access_level": AccessLevel.READ_WRITE,
                            "granted_at": now,
                        }
                        for u in chunk
                    ],
                )
            print(f"  seeded connector {c + 1}/{connectors}", file=sys.stderr)
        token = credentials.create(
            session, "bench-gateway", ["decisions:check"], Origin("bench", Source.CLI)
        )
    if database.dialect == "postgresql":
        with database.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return token


LUA = """
math.randomseed(os.time())
local actions = {"search", "read_item", "comment", "update_item", "delete_item", "unknown_tool"}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(auth)s
request = function()
  local body = string.format(
    '{"user": "user%%06d@bench.example", "connector": "connector-%%d", '
    .. '"action": "%%s", "interface": "web"}',
    math.random(0, %(users)d - 1), math.random(0, %(connectors)d - 1),
    actions[math.random(1, #actions)])
  return wrk.format(nil, nil, nil, body)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app: str | None, env: dict[str, str], port: int) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "-c",
        str(ROOT / "deploy" / "gunicorn.conf.py"),
        "--access-logfile",
        "/dev/null",
        "--pythonpath",
        str(ROOT / "bench"),
    ]
    if app:
        command.append(app)
    process = subprocess.Popen(
        command,
        env={**os.environ, **env, "PROVISIONING_BIND": f"127.0.0.1:{port}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except urllib.error.HTTPError:
            return process  # answering (the bare app has no /healthz)
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("gunicorn did not start")


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1" if connections == 1 else "2",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} requests failed:\n{out}")

    def ms(label: str) -> float:
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": ms("50%"),
        "p99": ms("99%"),
    }


def measure(name: str, url: str, script: Path, args: Any) -> dict[str, Any]:
    wrk(url, script, args.connections, 3)  # warm up every worker
    loaded = wrk(url, script, args.connections, args.seconds)
    single = wrk(url, script, 1, args.seconds)
    print(f"  {name}: {loaded} / single connection {single}", file=sys.stderr)
    return {"loaded": loaded, "single": single}


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every decision benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--connectors", type=int, default=10, help="grants = users x this")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians reported)")
    return parser


@contextmanager
def bench_database(postgres: bool, workdir: Path) -> Iterator[tuple[Database, str]]:
    """A migrated database (a SQLite file in ``workdir``, or a PostgreSQL schema of its
    own) and its URL; the schema is dropped after."""
    schema = None
    if postgres:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        admin = create_engine(POSTGRES)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{workdir / 'bench.db'}"
    database = Database(url)
    try:
        database.upgrade()
        yield database, url
    finally:
        database.dispose()
        if schema:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def run_rounds(targets: dict[str, tuple[str, Path]], args: Any) -> dict[str, Any]:
    """Measure every target in alternating rounds, so that other load on the machine
    falls on all alike; each figure is the median over the rounds."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for _ in range(args.repeat):
        for name, (target, script) in targets.items():
            runs[name].append(measure(name, target, script, args))
    return {
        name: {
            mode: {
                key: statistics.median(r[mode][key] for r in rounds)
                for key in ("rps", "p50", "p99")
            }
            for mode in ("loaded", "single")
        }
        for name, rounds in runs.items()
    }


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__.splitlines()[0]).parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-decisions-"))
    processes: list[subprocess.Popen] = []
    try:
        with bench_database(args.postgres, workdir) as (database, url):
            started = time.monotonic()
            token = seed(database, args.users, args.connectors)
            print(f"  seeded in {time.monotonic() - started:.0f} s", file=sys.stderr)
            with database.reader() as session:
                grants = session.scalar(select(func.count()).select_from(Grant))
            targets = {}
            for name, app, path, auth in [
                ("bare Flask JSON endpoint", "bare_flask:app", "/decide", ""),
                ("POST /api/v1/decisions", None, "/api/v1/decisions", token),
            ]:
                script = workdir / f"{len(targets)}.lua"
                header = f'wrk.headers["Authorization"] = "Bearer {auth}"' if auth else ""
                script.write_text(
                    LUA % {"auth": header, "users": args.users, "connectors": args.connectors}
                )
                port = free_port()
                processes.append(serve(app, {"DATABASE_URL": url}, port))
                targets[name] = (f"http://127.0.0.1:{port}{path}", script)
            results = run_rounds(targets, args)
            stop(processes)
            with database.reader() as session:
                used = session.scalar(
                    select(func.count()).select_from(Grant).where(Grant.last_used_at.is_not(None))
                )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)  # half a gigabyte of SQLite

    ceiling = results["bare Flask JSON endpoint"]["loaded"]["rps"]
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\n{kind}, {args.users:,} users, {grants:,} grants; {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; wrk {args.connections} connections, "
        f"medians of {args.repeat} alternating rounds of {args.seconds} s; "
        f"grants with a recorded last use afterwards: {used:,}\n"
    )
    print(
        "| endpoint | req/s | vs ceiling | p50 ms | p99 ms | 1 connection: req/s | p50 ms "
        "| p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        loaded, single = r["loaded"], r["single"]
        print(
            f"| {name} | {loaded['rps']:,.0f} | {loaded['rps'] / ceiling:.2f}x "
            f"| {loaded['p50']:.2f} | {loaded['p99']:.2f} | {single['rps']:,.0f} "
            f"| {single['p50']:.2f} | {single['p99']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
