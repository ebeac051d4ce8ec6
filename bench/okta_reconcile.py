"""Benchmark: full and incremental reconciliation against an Okta-compatible server at scale.

The test suite's Okta-compatible server (real HTTP on 127.0.0.1, talked to
by the real okta SDK) is loaded with 100k users and 5k groups, every group
mapped to a connector, and our database holds the same memberships and the
grants they justify. Then:

1. a full reconciliation (no drift to repair): wall time, and requests made
   against the minimum number of pages (one per 1,000 members per group, one
   per 200 users);
2. 100 membership changes in Okta (50 adds, 50 removes), then an incremental
   run: wall time, drift found and repaired.

    .venv/bin/python bench/okta_reconcile.py [--users 100000] [--groups 5000]
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

from sqlalchemy import insert

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


def build(state: OktaState, database: Database, users: int, groups: int, per_user: int) -> dict:
    """The same organisation in the Okta server and in our database."""
    rng = random.Random(5)
    okta_users = [
        state.add_user(f"user{u}@example.com", okta_id=f"00u{u:07d}") for u in range(users)
    ]
    okta_groups = [state.add_group(f"g{g}", okta_id=f"00g{g:07d}") for g in range(groups)]
    membership = {}
    for u in range(users):
        for g in rng.sample(range(groups), per_user):
            membership.setdefault(g, []).append(u)
    with state.lock:
        for g, members in membership.items():
            state.members[okta_groups[g]["id"]] = [okta_users[u]["id"] for u in members]
        state.changed()

    now = utcnow()
    user_ids = [uuid.uuid4() for _ in range(users)]
    group_ids = [uuid.uuid4() for _ in range(groups)]
    connectors = 200
    with database.engine.begin() as conn:
        conn.execute(insert(Connector), connector_rows(connectors))
        connector_ids = list(range(1, connectors + 1))
        conn.execute(
            insert(Group),
            [
                {
                    "id": gid,
                    "display_name": f"g{g}",
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
                    "connector_id": connector_ids[g % connectors],
                    "access_level": "read",
                    "created_by": "bench",
                    "created_at": now,
                    "updated_at": now,
                }
                for g, gid in enumerate(group_ids)
            ],
        )
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

        started = time.perf_counter()
        full = reconciliation.reconcile(database, client)
        full_seconds = time.perf_counter() - started
        assert full.status == "succeeded", full.error
        print(f"full: {full_seconds:.1f}s, {full.requests:,} requests, {full.counts}", flush=True)

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
        started = time.perf_counter()
        incremental = reconciliation.reconcile(database, client, full=False)
        incremental_seconds = time.perf_counter() - started
        assert incremental.status == "succeeded", incremental.error
        print(
            f"incremental: {incremental_seconds:.1f}s, {incremental.requests} requests, "
            f"{incremental.counts}",
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
    print("| run | wall s | requests | minimum pages | ratio | drift repaired |")
    print("|---|---:|---:|---:|---:|---|")
    print(
        f"| full ({args.users:,} users, {args.groups:,} groups) | {full_seconds:.1f} "
        f"| {full.requests:,} | {org['minimum_pages']:,} | {ratio:.2f} | none (in sync) |"
    )
    repaired = ", ".join(
        f"{k} {incremental.counts[k]}" for k in ("missing", "extra") if incremental.counts.get(k)
    )
    print(
        f"| incremental after {args.changes} membership changes | {incremental_seconds:.1f} "
        f"| {incremental.requests:,} | | | {repaired} |"
    )


def logging_quiet() -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
