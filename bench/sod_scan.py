"""Benchmark: the separation-of-duties detective scan over 1M grants with 50 rules, on SQLite
and PostgreSQL.

The organisation of bench/okta_hooks.py (100k users, 2,000 groups, 200 connectors, 10
grants each: 1M grants), then 50 rules inserted directly, each of two connectors against
two others (drawn at random, the sides disjoint), and 1,000 live exemptions of violators.
PostgreSQL's statistics are gathered after loading (as autovacuum would); SQLite's are not
(the service never runs ANALYZE there). Timed: ``separation.violators`` alone (the rules'
queries, every row read), then the findings it opens (``oversight.scan._separation`` and
``observe``) first and in the steady state. The violators are checked against a brute force
in Python over every live grant.

    .venv/bin/python bench/sod_scan.py [--users 100000] [--rules 50] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

from sqlalchemy import func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import bulk, database_arguments, database_for
from bench.okta_hooks import seed
from provisioning.connectors.models import Connector
from provisioning.database import Database, utcnow
from provisioning.entitlements import separation
from provisioning.entitlements.models import Grant, SeparationExemption, SeparationRule
from provisioning.oversight.findings import observe
from provisioning.oversight.models import FindingKind, Severity
from provisioning.oversight.scan import _separation

EXEMPTIONS = 1_000


def plant_rules(database: Database, rules: int) -> None:
    rng = random.Random(21)
    with database.reader() as session:
        connector_ids = list(session.scalars(select(Connector.id).order_by(Connector.id)))
    now = utcnow()
    rows = []
    for i in range(rules):
        picked = rng.sample(connector_ids, 4)
        rows.append(
            {
                "name": f"rule {i}",
                "these": picked[:2],
                "those": picked[2:],
                "owner": "risk@example.com",
                "reason": "bench",
                "created_by": "bench",
                "created_at": now,
            }
        )
    with database.engine.begin() as conn:
        conn.execute(insert(SeparationRule), rows)


def brute_force(database: Database) -> set[tuple[int, object]]:
    """Every (rule, user) holding both sides, unexempt: from every live grant, in Python."""
    held: dict[object, set[int]] = {}
    now = utcnow()
    with database.reader() as session:
        for user_id, connector_id in session.execute(
            select(Grant.user_id, Grant.connector_id).where(Grant.revoked_at.is_(None))
        ):
            held.setdefault(user_id, set()).add(connector_id)
        rules = session.execute(
            select(SeparationRule.id, SeparationRule.these, SeparationRule.those)
        ).all()
        exempt = set(
            session.execute(
                select(SeparationExemption.rule_id, SeparationExemption.user_id).where(
                    SeparationExemption.expires_at > now
                )
            ).all()
        )
    return {
        (rule_id, user_id)
        for rule_id, these, those in rules
        for user_id, connectors in held.items()
        if connectors & set(these) and connectors & set(those) and (rule_id, user_id) not in exempt
    }


def exempt_some(database: Database, found: list[tuple[int, object]]) -> None:
    rng = random.Random(5)
    now = utcnow()
    later = now.replace(year=now.year + 1)
    rows = [
        {
            "rule_id": rule_id,
            "user_id": user_id,
            "justification": "bench",
            "approved_by": "bench",
            "expires_at": later,
            "created_at": now,
        }
        for rule_id, user_id in rng.sample(found, min(EXEMPTIONS, len(found)))
    ]
    with database.engine.begin() as conn:
        bulk(conn, SeparationExemption, rows)
        if database.dialect == "postgresql":
            conn.execute(text("ANALYZE"))


def timed_violators(database: Database) -> tuple[float, list[tuple[int, object]]]:
    started = time.perf_counter()
    with database.reader() as session:
        found = [(rule.id, user_id) for rule, user_id in separation.violators(session)]
    return time.perf_counter() - started, found


def timed_findings(database: Database) -> float:
    started = time.perf_counter()
    with database.transaction() as session:
        observe(
            session,
            FindingKind.SEPARATION_VIOLATION,
            Severity.HIGH,
            "separation",
            _separation(session),
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rules", type=int, default=50)
    database_arguments(parser)
    args = parser.parse_args()
    rows = []
    for kind in args.databases.split(","):
        with database_for(kind, args.postgres) as database:
            seed(database, args.users, 2000, 200, 10)
            plant_rules(database, args.rules)
            _, before = timed_violators(database)
            exempt_some(database, before)
            with database.reader() as session:
                grants = session.scalar(select(func.count(Grant.id)))
            times = [timed_violators(database) for _ in range(3)]
            found = times[-1][1]
            expected = brute_force(database)
            assert set(found) == expected, (len(found), len(expected))
            first = timed_findings(database)
            second = timed_findings(database)
            violators_s = sorted(t for t, _ in times)[1]
            print(
                f"{kind}: {grants:,} grants, {len(found):,} violators (brute force agrees); "
                f"violators {violators_s:.2f} s, findings first {first:.1f} s, "
                f"steady {second:.1f} s",
                flush=True,
            )
            rows.append((kind, grants, len(found), violators_s, first, second))
    print()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    print(
        "| database | grants | rules | violators | violators query s (median of 3) "
        "| findings, first scan s | findings, steady state s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, grants, count, violators_s, first, second in rows:
        print(
            f"| {kind} | {grants:,} | {args.rules} | {count:,} | {violators_s:.2f} "
            f"| {first:.1f} | {second:.1f} |"
        )


if __name__ == "__main__":
    main()
