"""Benchmark: the stale-access scan over 100k users and 1M grants, on SQLite and PostgreSQL.

The organisation of bench/okta_hooks.py (every grant justified by a mapping),
then drift planted with direct SQL: 30% of grants granted 200 days ago and
never used (dormant), 1,000 users deactivated behind the engine's back (their
~10k grants must be revoked by the scan), and 5,000 grants nobody justifies.
PostgreSQL's statistics are gathered after planting (as autovacuum would);
SQLite's are not (the service never runs ANALYZE there). Timed: the first
scan (opens every finding, revokes the inactive holders' grants) and a second
scan (steady state: finds the same again).

    .venv/bin/python bench/stale_scan.py [--users 100000] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import sys
import time
from pathlib import Path

from sqlalchemy import func, insert, select, text, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import DEFAULT_POSTGRES, bulk, connector_rows, database_for
from bench.okta_hooks import seed
from provisioning.connectors.models import Connector
from provisioning.database import Database, utcnow
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
from provisioning.oversight.models import Finding
from provisioning.oversight.scan import scan


def plant(database: Database, data: dict) -> dict:
    rng = random.Random(3)
    old = utcnow() - dt.timedelta(days=200)
    with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            conn.execute(update(Grant).where(func.random() < 0.3).values(granted_at=old))
        else:
            conn.execute(
                update(Grant).where(func.abs(func.random()) % 10 < 3).values(granted_at=old)
            )
        leavers = rng.sample(data["user_ids"], 1000)
        for start in range(0, len(leavers), 500):
            conn.execute(
                update(User).where(User.id.in_(leavers[start : start + 500])).values(active=False)
            )
        conn.execute(insert(Connector), connector_rows(1, prefix="unmapped"))
        unmapped = conn.scalar(select(Connector.id).where(Connector.slug == "unmapped0"))
        now = utcnow()
        strays = [
            {"user_id": u, "connector_id": unmapped, "access_level": "read", "granted_at": now}
            for u in rng.sample(data["user_ids"], 5000)
            if u not in set(leavers)
        ]
        bulk(conn, Grant, strays)
        if database.dialect == "postgresql":
            # As autovacuum would have by the time a scan runs: a third of the grants changed.
            conn.execute(text("ANALYZE"))
    return {"leavers": len(leavers), "strays": len(strays)}


def timed_scan(database: Database) -> tuple[float, dict]:
    started = time.perf_counter()
    with database.transaction() as session:
        counts = scan(session)
    return time.perf_counter() - started, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    rows = []
    for kind in args.databases.split(","):
        with database_for(kind, args.postgres) as database:
            data = seed(database, args.users, 2000, 200, 10)
            planted = plant(database, data)
            with database.reader() as session:
                grants = session.scalar(select(func.count(Grant.id)))
            first, counts = timed_scan(database)
            second, _ = timed_scan(database)
            with database.reader() as session:
                by_kind = dict(
                    session.execute(
                        select(Finding.kind, func.count(Finding.id)).group_by(Finding.kind)
                    ).all()
                )
            print(f"{kind}: planted {planted}; findings {by_kind}", flush=True)
            rows.append((kind, grants, first, second, counts, by_kind))
    print()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    print(
        "| database | grants | first scan s | second scan s | dormant | unjustified "
        "| inactive holders revoked |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, grants, first, second, counts, by_kind in rows:
        print(
            f"| {kind} | {grants:,} | {first:.1f} | {second:.1f} "
            f"| {by_kind.get('dormant_grant', 0):,} | {by_kind.get('unjustified_grant', 0):,} "
            f"| {counts['inactive_holder'].get('revoked', 0):,} |"
        )


if __name__ == "__main__":
    main()
