"""Benchmark: the separation-of-duties detective scan over 1M grants with 50 rules, on SQLite
and PostgreSQL.

The organisation of bench/okta_hooks.py (100k users, 2,000 groups, 200 connectors, 10
grants each: 1M grants), then 50 rules inserted directly, each of two connectors against
two others (drawn at random, the sides disjoint), and 1,000 live exemptions of violators.

``--actions all`` makes each rule's parts actions instead (``[connector, action]``, one
action of each of the four connectors), ``--actions mix`` one connector and one action a
side. Then every connector gets four actions (two read, two write), a third of the
mappings give ``read_write`` (their grants too) and a quarter list an action subset
(``search``, ``merge_pull_request``), so that holding an action depends on the level and
the subset of the source that gives it, as the scan's queries read them.
PostgreSQL's statistics are gathered after loading (as autovacuum would); SQLite's are not
(the service never runs ANALYZE there). Timed: ``separation.violators`` alone (the rules'
queries, every row read), then the findings it opens (``oversight.scan._separation`` and
``observe``) first and in the steady state. The violators are checked against a brute force
in Python over every live grant.

    .venv/bin/python bench/sod_scan.py [--users 100000] [--rules 50] [--databases sqlite,postgresql]
        [--actions none|all|mix, or several: all,mix]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

from sqlalchemy import delete, exists, func, insert, select, text, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import bulk, database_arguments, database_for
from bench.okta_hooks import seed
from provisioning.connectors.models import AccessLevel, Action, ActionKind, Connector
from provisioning.database import Database, utcnow
from provisioning.entitlements import separation
from provisioning.entitlements.models import (
    Grant,
    Mapping,
    SeparationExemption,
    SeparationRule,
)
from provisioning.identity.models import Membership
from provisioning.oversight.findings import observe
from provisioning.oversight.models import Finding, FindingKind, Severity
from provisioning.oversight.scan import _separation

EXEMPTIONS = 1_000
ACTIONS = {
    "search": "read",
    "read_file": "read",
    "merge_pull_request": "write",
    "push": "write",
}
SUBSET = ["search", "merge_pull_request"]


def plant_actions(database: Database) -> None:
    """Four actions per connector; a third of the mappings (and their grants) read_write, a
    quarter listing an action subset."""
    now = utcnow()
    with database.reader() as session:
        connector_ids = list(session.scalars(select(Connector.id).order_by(Connector.id)))
        mapping_ids = list(session.scalars(select(Mapping.id).order_by(Mapping.id)))
    with database.engine.begin() as conn:
        conn.execute(
            insert(Action),
            [
                {
                    "connector_id": cid,
                    "name": name,
                    "kind": kind,
                    "org_policy": "always_allow",
                    "created_at": now,
                    "updated_at": now,
                }
                for cid in connector_ids
                for name, kind in ACTIONS.items()
            ],
        )
        wider = [m for i, m in enumerate(mapping_ids) if i % 3 == 0]
        narrower = [m for i, m in enumerate(mapping_ids) if i % 4 == 1]
        conn.execute(update(Mapping).where(Mapping.id.in_(wider)).values(access_level="read_write"))
        conn.execute(update(Mapping).where(Mapping.id.in_(narrower)).values(actions=SUBSET))
        # Each person holds each of their connectors through one group: the grant's level
        # is its mapping's.
        conn.execute(
            update(Grant)
            .where(
                exists()
                .where(
                    Membership.user_id == Grant.user_id,
                    Membership.group_id == Mapping.group_id,
                    Mapping.connector_id == Grant.connector_id,
                    Mapping.access_level == "read_write",
                )
                .correlate(Grant)
            )
            .values(access_level="read_write")
        )


def plant_rules(database: Database, rules: int, actions: str = "none") -> None:
    rng = random.Random(21)
    with database.reader() as session:
        connector_ids = list(session.scalars(select(Connector.id).order_by(Connector.id)))
    now = utcnow()
    names = sorted(ACTIONS)
    rows = []
    for i in range(rules):
        picked: list = rng.sample(connector_ids, 4)
        if actions == "all":
            picked = [[c, rng.choice(names)] for c in picked]
        elif actions == "mix":  # a connector and an action a side
            a, b, c, d = picked
            picked = [a, [b, rng.choice(names)], [c, rng.choice(names)], d]
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
    """Every (rule, user) holding both sides, unexempt: from every live grant and every
    present membership's mapping, in Python. A connector is held by a live grant; an action
    by a live grant of its connector and a mapping of it that lists the action (or lists
    none) at a level allowing the action's kind."""
    held: dict[object, set] = {}
    now = utcnow()
    with database.reader() as session:
        for user_id, connector_id in session.execute(
            select(Grant.user_id, Grant.connector_id).where(Grant.revoked_at.is_(None))
        ):
            held.setdefault(user_id, set()).add(connector_id)
        kinds: dict[int, dict[str, ActionKind]] = {}
        for connector_id, name, kind in session.execute(
            select(Action.connector_id, Action.name, Action.kind)
        ):
            kinds.setdefault(connector_id, {})[name] = ActionKind(kind)
        mappings = {
            group_id: (connector_id, AccessLevel(level), actions)
            for group_id, connector_id, level, actions in session.execute(
                select(
                    Mapping.group_id, Mapping.connector_id, Mapping.access_level, Mapping.actions
                )
            )
        }
        for user_id, group_id in session.execute(
            select(Membership.user_id, Membership.group_id).where(Membership.present.is_(True))
        ):
            connector_id, level, listed = mappings[group_id]
            if connector_id not in held.get(user_id, ()):
                continue
            for name, kind in kinds.get(connector_id, {}).items():
                if level.allows(kind) and (listed is None or name in listed):
                    held[user_id].add((connector_id, name))
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

    def side(entries: list) -> set:
        return {e if isinstance(e, int) else (e[0], e[1]) for e in entries}

    sides = [(rule_id, side(these), side(those)) for rule_id, these, those in rules]
    return {
        (rule_id, user_id)
        for rule_id, these, those in sides
        for user_id, parts in held.items()
        if parts & these and parts & those and (rule_id, user_id) not in exempt
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
    parser.add_argument(
        "--actions",
        default="none",
        help="rules over connectors (none), over actions (all), or one of each a side (mix); "
        "several, comma-separated, run one after the other over the same organisation",
    )
    database_arguments(parser)
    args = parser.parse_args()
    modes = args.actions.split(",")
    if unknown := set(modes) - set(LABELS):
        parser.error(f"--actions: {', '.join(sorted(unknown))}? none, all or mix")
    rows = []
    for kind in args.databases.split(","):
        with database_for(kind, args.postgres) as database:
            seed(database, args.users, 2000, 200, 10)
            if modes != ["none"]:
                plant_actions(database)
            for mode in modes:
                forget_rules(database)
                rows.append((kind, mode, *measure(database, kind, args.rules, mode)))
    print()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    print(
        "| database | grants | rules | parts | violators | violators query s (median of 3) "
        "| findings, first scan s | findings, steady state s |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for kind, mode, grants, count, violators_s, first, second in rows:
        print(
            f"| {kind} | {grants:,} | {args.rules} | {LABELS[mode]} | {count:,} "
            f"| {violators_s:.2f} | {first:.1f} | {second:.1f} |"
        )


LABELS = {"none": "connectors", "all": "actions", "mix": "connectors+actions"}


def forget_rules(database: Database) -> None:
    """No rule, exemption or separation finding: the next mode starts from none."""
    with database.engine.begin() as conn:
        conn.execute(delete(Finding).where(Finding.kind == FindingKind.SEPARATION_VIOLATION))
        conn.execute(delete(SeparationExemption))
        conn.execute(delete(SeparationRule))


def measure(database: Database, kind: str, rules: int, mode: str) -> tuple:
    plant_rules(database, rules, mode)
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
        f"{kind}: {grants:,} grants, rules of {LABELS[mode]}, "
        f"{len(found):,} violators (brute force agrees); "
        f"violators {violators_s:.2f} s, findings first {first:.1f} s, "
        f"steady {second:.1f} s",
        flush=True,
    )
    return grants, len(found), violators_s, first, second


if __name__ == "__main__":
    main()
