"""Benchmark: full and incremental reconciliation against an Okta-compatible server at scale.

The test suite's Okta-compatible server (real HTTP on 127.0.0.1, talked to
by the real okta SDK) is loaded with 100k users and 5k groups, every group
mapped to a connector, and our database holds the same memberships and the
grants they justify. Then:

1. a full reconciliation (no drift to repair): wall time, and requests made
   against the minimum number of pages (one per 1,000 members per group, one
   per 200 users);
2. 100 membership changes in Okta (50 adds, 50 removes), then an incremental
   run: wall time, drift found and repaired;
3. 1,000 movers (each moved from one of their groups to another group mapped
   to the same connector), then a full run: wall time, and the grants revoked
   and created by it (none should be: a mover keeps their grant).

    .venv/bin/python bench/okta_reconcile.py [--users 100000] [--groups 5000] [--moves 1000]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import connector_rows
from provisioning.connectors.models import Connector
from provisioning.database import Database, utcnow
from provisioning.entitlements.models import Grant, Mapping
from provisioning.identity.models import Group, Membership, User
from provisioning.okta import reconcile as reconciliation
from provisioning.okta.client import OktaClient
from tests.okta.okta_server import TOKEN, OktaServer, OktaState

BATCH = 10_000
CONNECTORS = 200  # group g is mapped to connector g % CONNECTORS


def okta_org(state: OktaState, users: int, groups: int, per_user: int) -> tuple:
    """The Okta server's people and groups, each person in ``per_user`` groups: its users,
    its groups, and group index -> member indexes."""
    rng = random.Random(5)
    okta_users = [
        state.add_user(f"user{u}@example.com", okta_id=f"00u{u:07d}") for u in range(users)
    ]
    okta_groups = [state.add_group(f"g{g}", okta_id=f"00g{g:07d}") for g in range(groups)]
    membership: dict[int, list[int]] = {}
    for u in range(users):
        for g in rng.sample(range(groups), per_user):
            membership.setdefault(g, []).append(u)
    with state.lock:
        for g, members in membership.items():
            state.members[okta_groups[g]["id"]] = [okta_users[u]["id"] for u in members]
        state.changed()
    return okta_users, okta_groups, membership


def mapped_groups(conn, okta_groups: list[dict], now) -> tuple[list[uuid.UUID], list[int]]:
    """Our copies of the Okta groups, group g mapped to connector g % CONNECTORS: their ids
    and the connectors'."""
    conn.execute(insert(Connector), connector_rows(CONNECTORS))
    connector_ids = list(range(1, CONNECTORS + 1))
    group_ids = [uuid.uuid4() for _ in okta_groups]
    conn.execute(
        insert(Group),
        [
            {
                "id": gid,
                "display_name": f"g{g}",
                "display_name_key": f"g{g}",
                "external_id": okta_groups[g]["id"],
                "created_at": now,
                "updated_at": now,
            }
            for g, gid in enumerate(group_ids)
        ],
    )
    conn.execute(
        insert(Mapping),
        [
            {
                "group_id": gid,
                "connector_id": connector_ids[g % CONNECTORS],
                "access_level": "read",
                "created_by": "bench",
                "created_at": now,
                "updated_at": now,
            }
            for g, gid in enumerate(group_ids)
        ],
    )
    return group_ids, connector_ids


def build(state: OktaState, database: Database, users: int, groups: int, per_user: int) -> dict:
    """The same organisation in the Okta server and in our database."""
    okta_users, okta_groups, membership = okta_org(state, users, groups, per_user)
    now = utcnow()
    user_ids = [uuid.uuid4() for _ in range(users)]
    connectors = CONNECTORS
    with database.engine.begin() as conn:
        group_ids, connector_ids = mapped_groups(conn, okta_groups, now)
        for start in range(0, users, BATCH):
            conn.execute(
                insert(User),
                [
                    {
                        "id": user_ids[u],
                        "user_name": f"user{u}@example.com",
                        "user_name_key": f"user{u}@example.com",
                        "external_id": okta_users[u]["id"],
                        "active": True,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for u in range(start, min(start + BATCH, users))
                ],
            )
        rows = [
            {
                "user_id": user_ids[u],
                "group_id": group_ids[g],
                "present": True,
                "source": "okta-sync",
                "updated_at": now,
            }
            for g, members in membership.items()
            for u in members
        ]
        for start in range(0, len(rows), BATCH):
            conn.execute(insert(Membership), rows[start : start + BATCH])
        grants = {
            (u, connector_ids[g % connectors]) for g, members in membership.items() for u in members
        }
        grant_rows = [
            {"user_id": user_ids[u], "connector_id": c, "access_level": "read", "granted_at": now}
            for u, c in grants
        ]
        for start in range(0, len(grant_rows), BATCH):
            conn.execute(insert(Grant), grant_rows[start : start + BATCH])
    minimum_pages = sum(math.ceil(len(m) / 1000) or 1 for m in membership.values())
    minimum_pages += (groups - len(membership)) + math.ceil(users / 200)
    return {
        "okta_users": okta_users,
        "okta_groups": okta_groups,
        "membership": membership,
        "minimum_pages": minimum_pages,
        "grants": len(grant_rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=5_000)
    parser.add_argument("--groups-per-user", type=int, default=2)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--moves", type=int, default=1000)
    parser.add_argument("--database", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as workdir, OktaServer() as server:
        logging_quiet()
        database = Database(args.database or f"sqlite:///{Path(workdir) / 'bench.db'}")
        database.upgrade()
        started = time.perf_counter()
        org = build(server.state, database, args.users, args.groups, args.groups_per_user)
        print(
            f"loaded {args.users:,} users, {args.groups:,} groups, {org['grants']:,} grants "
            f"in {time.perf_counter() - started:.0f}s",
            flush=True,
        )
        client = OktaClient(server.url, api_token=TOKEN, allow_http=True)

        full, full_seconds = timed(lambda: reconciliation.reconcile(database, client))
        assert full.status == "succeeded", full.error
        print(f"full: {full_seconds}, {full.requests:,} requests, {full.counts}", flush=True)

        rng = random.Random(9)
        state = server.state
        time.sleep(0.01)
        for i in range(args.changes):
            g = rng.choice(list(org["membership"]))
            group_id = org["okta_groups"][g]["id"]
            if i % 2:
                state.remove_member(group_id, state.members[group_id][0])
            else:
                state.add_member(group_id, org["okta_users"][rng.randrange(args.users)]["id"])
        reconciliation.INCREMENTAL_OVERLAP = reconciliation.dt.timedelta(0)
        incremental, incremental_seconds = timed(
            lambda: reconciliation.reconcile(database, client, full=False)
        )
        assert incremental.status == "succeeded", incremental.error
        print(
            f"incremental: {incremental_seconds}, {incremental.requests} requests, "
            f"{incremental.counts}",
            flush=True,
        )
        moved = move(server.state, org, args.moves, args.groups, rng)
        grants_before = grant_counts(database)
        movers, movers_seconds = timed(lambda: reconciliation.reconcile(database, client))
        assert movers.status == "succeeded", movers.error
        churn = {k: v - grants_before[k] for k, v in grant_counts(database).items()}
        print(
            f"movers: {moved} moved, {movers_seconds}, {movers.requests} requests, "
            f"grants created {churn['rows']}, revoked {churn['revoked']}, {movers.counts}",
            flush=True,
        )
        client.close()
        database.dispose()

    ratio = full.requests / org["minimum_pages"]
    print()
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {database.dialect}"
    )
    print()
    print("| run | wall s (cpu s) | requests | minimum pages | ratio | drift repaired |")
    print("|---|---:|---:|---:|---:|---|")
    print(
        f"| full ({args.users:,} users, {args.groups:,} groups) | {full_seconds} "
        f"| {full.requests:,} | {org['minimum_pages']:,} | {ratio:.2f} | none (in sync) |"
    )
    repaired = ", ".join(
        f"{k} {incremental.counts[k]}" for k in ("missing", "extra") if incremental.counts.get(k)
    )
    print(
        f"| incremental after {args.changes} membership changes | {incremental_seconds} "
        f"| {incremental.requests:,} | | | {repaired} |"
    )
    print(
        f"| full after {moved} movers (same connector) | {movers_seconds} "
        f"| {movers.requests:,} | | | missing {movers.counts['missing']}, extra "
        f"{movers.counts['extra']}; grants revoked {churn['revoked']}, created {churn['rows']} |"
    )


def timed(run):
    """A run's result, and its wall time with the CPU time of this process (client, server
    and database: the part other processes on the machine cannot inflate) beside it."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, f"{time.perf_counter() - wall:.1f} ({time.process_time() - cpu:.1f})"


def move(state: OktaState, org: dict, moves: int, groups: int, rng: random.Random) -> int:
    """Move people, each from one of their groups to another mapped to the same connector."""
    time.sleep(0.01)
    moved = 0
    groups_of: dict[int, list[int]] = {}
    for g, members in org["membership"].items():
        for u in members:
            groups_of.setdefault(u, []).append(g)
    people = rng.sample(sorted(groups_of), min(moves, len(groups_of)))
    for u in people:
        person = org["okta_users"][u]["id"]
        joined = groups_of[u]
        for g in joined:
            target = (g + CONNECTORS) % groups
            if target == g or target in joined:
                continue
            source_id, target_id = org["okta_groups"][g]["id"], org["okta_groups"][target]["id"]
            if person not in state.members[source_id]:
                continue  # removed by the incremental stage's changes
            state.remove_member(source_id, person)
            state.add_member(target_id, person)
            org["membership"][g].remove(u)
            org["membership"].setdefault(target, []).append(u)
            moved += 1
            break
    return moved


def grant_counts(database: Database) -> dict[str, int]:
    with database.reader() as session:
        return {
            "rows": session.scalar(select(func.count(Grant.id))),
            "revoked": session.scalar(
                select(func.count(Grant.id)).where(Grant.revoked_at.is_not(None))
            ),
        }


def logging_quiet() -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
