"""Benchmark: console page render times at 100k users and 1M grants.

The organisation of bench/okta_hooks.py (100,000 users, 2,000 groups, 200 connectors,
1,000,000 grants, each justified by a mapping). A signed-in admin's requests go
through the whole app in process (Flask's test client: routing, session, CSRF check,
the domain's reads, Jinja2), each page asked ``--rounds`` times after a warm-up:

- the overview (open findings by kind and the outbox per target read live; the totals, the
  month's chart and the latencies kept for a minute per process, as the console keeps
  them); and the totals, the chart and the latencies read cold (what the first overview
  of each minute adds); and the whole overview with nothing kept (every read cold);
- a person's page (groups, each grant's sources and every action's effective policy);
- a people search.

    .venv/bin/python bench/console_pages.py [--users 100000] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.fixtures import DEFAULT_POSTGRES, database_for
from bench.okta_hooks import seed
from provisioning.audit.log import Origin, Source
from provisioning.entitlements import counts
from provisioning.oversight.overview import activity, speed, totals
from provisioning.settings import load
from provisioning.tokens import credentials
from provisioning.web.app import create_app


def timed(client, path: str, rounds: int, forget=lambda: None) -> dict[str, float]:
    for _ in range(3):
        assert client.get(path).status_code == 200, path
    samples = []
    for _ in range(rounds):
        forget()
        started = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200
    samples.sort()
    return {
        "p50": statistics.median(samples),
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    }


def cold(database, read) -> dict[str, float]:
    """What the first overview of each minute adds: ``read`` once more, five times."""
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        with database.reader() as session:
            read(session)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50": statistics.median(samples), "p99": samples[-1]}


def run(kind: str, users: int, rounds: int) -> dict[str, dict[str, float]]:
    with database_for(kind, os.environ.get("BENCH_POSTGRES", DEFAULT_POSTGRES)) as database:
        started = time.perf_counter()
        data = seed(database, users, 2000, 200, 10)
        with database.transaction() as session:  # the bulk load bypassed the engine's counts
            counts.recount(session)
        if kind == "postgresql":
            with database.engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        print(f"{kind}: seeded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        with database.transaction() as session:
            token = credentials.create(
                session, "bench", ["admin:write"], Origin("bench", Source.CLI)
            )
        settings = load(database_url=database.url, console_cookie_secure=False)
        app = create_app(settings, database, background=False)
        client = app.test_client()
        csrf = client.get("/console/sign-in").get_data(as_text=True)
        csrf = csrf.split('name="csrf_token" value="')[1].split('"')[0]
        signed = client.post("/console/sign-in", data={"token": token, "csrf_token": csrf})
        assert signed.status_code == 302
        person = data["user_ids"][users // 2]
        kept = app.extensions.setdefault("provisioning.console.kept", {})
        return {
            "overview": timed(client, "/console/", rounds),
            "overview, cold": timed(client, "/console/", rounds, kept.clear),
            "totals, cold": cold(database, totals),
            "chart, cold": cold(database, lambda session: activity(session, 30)),
            "latencies, cold": cold(database, speed),
            "person": timed(client, f"/console/people/{person}", rounds),
            "search": timed(client, "/console/people?q=user4999", rounds),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    print("| database | page | p50 ms | p99 ms |")
    print("|---|---|---:|---:|")
    for kind in args.databases.split(","):
        for page, figures in run(kind, args.users, args.rounds).items():
            print(f"| {kind} | {page} | {figures['p50']:.1f} | {figures['p99']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
