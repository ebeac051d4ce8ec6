"""Benchmark: what separation-of-duties rules cost one engine run, the run an IdP membership
(SCIM, an event hook) makes for one person.

The organisation of bench/okta_hooks.py (users x 10 grants over 200 connectors), then
the engine run for each of 300 people drawn at random (``engine.apply`` for that person,
nothing to change: the steady state of a membership fact repeated), first with no rule,
then with 50 rules of two connectors against two others (bench/sod_scan.py's): the first
runs say aloud the violations they meet (the rules are new), the next are the steady
state; then without rules again. With rules,
each run reads the rules, notes who of its people holds connectors of both sides of one,
and checks only those (one query per such rule) against their findings.

    .venv/bin/python bench/engine_sod.py [--users 20000] [--rules 50]
        [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import delete, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import database_arguments, database_for
from bench.okta_hooks import seed
from bench.sod_scan import plant_rules
from provisioning.audit.log import Origin, Source
from provisioning.database import Database
from provisioning.entitlements import engine
from provisioning.entitlements.models import SeparationRule
from provisioning.identity.models import User

ORIGIN = Origin("bench", Source.SCIM)
RUNS = 300


def timed_runs(database: Database, people: list) -> list[float]:
    times = []
    for user_id in people:
        start = time.perf_counter()
        with database.transaction() as session:
            engine.apply(session, engine.Affected.users(user_id), ORIGIN)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rules", type=int, default=50)
    database_arguments(parser)
    args = parser.parse_args()
    rows = []
    for kind in args.databases.split(","):
        with database_for(kind, args.postgres) as database:
            seed(database, args.users, 2000, 200, 10)
            with database.reader() as session:
                users = list(session.scalars(select(User.id)))
            people = random.Random(21).sample(users, RUNS)
            timed_runs(database, people[:20])  # warm
            without = timed_runs(database, people)
            plant_rules(database, args.rules)
            first = timed_runs(database, people)  # says aloud the violators it meets
            with_rules = timed_runs(database, people)
            with database.transaction() as session:
                session.execute(delete(SeparationRule))
            again = timed_runs(database, people)
            row = (
                kind,
                statistics.median(without),
                statistics.median(first),
                statistics.median(with_rules),
                statistics.median(again),
            )
            print(f"{kind}: median ms {row[1:]}", flush=True)
            rows.append(row)
    print()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    print(
        "| database | users | rules | no rule, ms | rules, first runs, ms "
        "| rules, steady, ms | no rule again, ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, a, b, c, d in rows:
        print(f"| {kind} | {args.users:,} | {args.rules} | {a:.2f} | {b:.2f} | {c:.2f} | {d:.2f} |")


if __name__ == "__main__":
    main()
