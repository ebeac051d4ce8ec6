"""Benchmark: the initial Okta import of 100k new people in 5k groups, over real HTTP.

The test suite's Okta-compatible server (real HTTP on 127.0.0.1, talked to by the
real okta SDK) holds 100,000 users and 5,000 groups, each user in two groups; our
database holds the 5,000 groups, each mapped to one of 200 connectors, and no
people. Then ``provisioning okta import`` (default: the mapped groups) creates
every person, membership and grant: wall time (and this process's CPU time), and
requests against the minimum number of pages (one per 1,000 members per group).
With ``--via reconcile`` a full reconciliation brings the same people in instead
(the path it shares with the import).

    .venv/bin/python bench/okta_import.py [--users 100000] [--groups 5000]
        [--database postgresql://...] [--via import|reconcile] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.okta_reconcile import logging_quiet, mapped_groups, okta_org, timed
from provisioning.audit.models import AuditEvent
from provisioning.database import Database, utcnow
from provisioning.entitlements.models import Grant
from provisioning.identity.models import Membership, User
from provisioning.okta import imports
from provisioning.okta import reconcile as reconciliation
from provisioning.okta.client import GROUP_MEMBERS_PAGE, USERS_PAGE, OktaClient
from tests.okta.okta_server import TOKEN, OktaServer, OktaState


def build(state: OktaState, database: Database, users: int, groups: int, per_user: int) -> dict:
    """People and groups in Okta; the groups, mapped, and no people in our database."""
    _, okta_groups, membership = okta_org(state, users, groups, per_user)
    with database.engine.begin() as conn:
        mapped_groups(conn, okta_groups, utcnow())
    sizes = [len(membership.get(g, [])) for g in range(groups)]
    return {
        "memberships": sum(sizes),
        "minimum_pages": sum(max(1, math.ceil(s / GROUP_MEMBERS_PAGE)) for s in sizes),
    }


def counts(database: Database) -> dict[str, int]:
    with database.reader() as session:

        def count(model, *where):
            return session.scalar(select(func.count()).select_from(model).where(*where))

        return {
            "users": count(User),
            "memberships": count(Membership),
            "grants": count(Grant),
            "audit events": count(AuditEvent),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=5_000)
    parser.add_argument("--groups-per-user", type=int, default=2)
    parser.add_argument("--via", choices=("import", "reconcile"), default="import")
    parser.add_argument("--database", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--profile", default=None, help="write a cProfile of the run here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-import-") as workdir, OktaServer() as server:
        logging_quiet()
        database = Database(args.database or f"sqlite:///{Path(workdir) / 'bench.db'}")
        database.upgrade()
        org = build(server.state, database, args.users, args.groups, args.groups_per_user)
        client = OktaClient(server.url, api_token=TOKEN, allow_http=True)
        profile = cProfile.Profile(time.process_time) if args.profile else None
        if profile:
            profile.enable()
        if args.via == "import":
            result, seconds = timed(lambda: imports.import_directory(database, client))
            assert result.status == "succeeded", result.error
            requests = result.requests
            minimum = org["minimum_pages"]
        else:
            result, seconds = timed(lambda: reconciliation.reconcile(database, client))
            assert result.status == "succeeded", result.error
            requests = result.requests
            minimum = org["minimum_pages"] + math.ceil(args.users / USERS_PAGE)
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        served = server.state.requests["total"]
        made = counts(database)
        client.close()
        database.dispose()

    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"Python {platform.python_version()}, {database.dialect}"
    )
    print(f"{args.via}: {made}, counts {result.counts}")
    print()
    print(
        "| database | path | people | groups | memberships | wall s (cpu s) | requests "
        "| minimum pages | ratio |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {database.dialect} | {args.via} | {made['users']:,} | {args.groups:,} "
        f"| {made['memberships']:,} | {seconds} | {requests:,} (served {served:,}) "
        f"| {minimum:,} | {requests / minimum:.2f} |"
    )


if __name__ == "__main__":
    main()
