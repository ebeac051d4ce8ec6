"""Benchmark: the initial Okta import of 100k new people in 5k groups, over real HTTP.

The test suite's Okta-compatible server (real HTTP on 127.0.0.1, talked to by the
real okta SDK), in a process of its own as Okta is another machine, holds 100,000
users and 5,000 groups, each user in two groups; our database holds the 5,000
groups, each mapped to one of 200 connectors, and no people. Then ``provisioning
okta import`` (default: the mapped groups) creates every person, membership and
grant: wall time, this process's CPU time (the import: client, engine, database
driver; SQLite's work included) and the Okta server's, the load average at the start
and end, and requests against the minimum number of pages (one per 1,000 members per
group).
With ``--via reconcile`` a full reconciliation brings the same people in instead
(the path it shares with the import).

    .venv/bin/python bench/okta_import.py [--users 100000] [--groups 5000]
        [--database postgresql://...] [--via import|reconcile] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy import func, select, text

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


def serve(users: int, groups: int, per_user: int, pipe: Connection) -> None:
    """The Okta org in a process of its own (Okta is another machine): sends its URL, its
    groups and the minimum pages, serves until told to stop, then sends the requests it
    served and the CPU seconds it used."""
    logging_quiet()
    state = OktaState()
    _, okta_groups, membership = okta_org(state, users, groups, per_user)
    sizes = [len(membership.get(g, [])) for g in range(groups)]
    with OktaServer(state) as server:
        pipe.send(
            (
                server.url,
                [{"id": g["id"]} for g in okta_groups],
                sum(sizes),
                sum(max(1, math.ceil(s / GROUP_MEMBERS_PAGE)) for s in sizes),
            )
        )
        cpu = time.process_time()
        pipe.recv()
        pipe.send((state.requests["total"], time.process_time() - cpu))


def postgres_cpu(database: Database) -> float | None:
    """The CPU seconds PostgreSQL's server processes for this database have used (the
    pool's connections, still open), from /proc on this machine; None on SQLite."""
    if database.dialect != "postgresql":
        return None
    with database.reader() as session:
        pids = session.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).all()
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


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


def watched_batches() -> dict[str, float]:
    """Where the import's own thread spends its time: each batch's write (wall, and this
    thread's CPU in it: the rest is waiting, for the database server or a core) counted
    as ``imports._apply`` runs."""
    spent = {"batches": 0, "wall": 0.0, "cpu": 0.0}
    apply = imports._apply

    def watched(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return apply(*args, **kwargs)
        finally:
            spent["batches"] += 1
            spent["wall"] += time.perf_counter() - wall
            spent["cpu"] += time.thread_time() - cpu

    imports._apply = watched
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=5_000)
    parser.add_argument("--groups-per-user", type=int, default=2)
    parser.add_argument("--via", choices=("import", "reconcile"), default="import")
    parser.add_argument("--database", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--profile", default=None, help="write a cProfile of the run here")
    args = parser.parse_args()

    ours, theirs = multiprocessing.Pipe()
    okta = multiprocessing.Process(
        target=serve, args=(args.users, args.groups, args.groups_per_user, theirs), daemon=True
    )
    okta.start()
    url, okta_groups, memberships, minimum = ours.recv()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as workdir:
        logging_quiet()
        database = Database(args.database or f"sqlite:///{Path(workdir) / 'bench.db'}")
        database.upgrade()
        with database.engine.begin() as conn:
            mapped_groups(conn, okta_groups, utcnow())
        client = OktaClient(url, api_token=TOKEN, allow_http=True)
        profile = cProfile.Profile(time.process_time) if args.profile else None
        if profile:
            profile.enable()
        load = os.getloadavg()[0]
        batches = watched_batches()
        if args.via == "import":
            result, seconds = timed(lambda: imports.import_directory(database, client))
        else:
            result, seconds = timed(lambda: reconciliation.reconcile(database, client))
            minimum += math.ceil(args.users / USERS_PAGE)
        assert result.status == "succeeded", result.error
        requests = result.requests
        load = f"{load:.1f}-{os.getloadavg()[0]:.1f}"
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        backends = postgres_cpu(database)
        ours.send("stop")
        served, server_cpu = ours.recv()
        okta.join(10)
        made = counts(database)
        client.close()
        database.dispose()

    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"Python {platform.python_version()}, {database.dialect}"
    )
    print(f"{args.via}: {made}, counts {result.counts}")
    if batches["batches"]:
        print(
            f"import thread: {batches['batches']} batches written in {batches['wall']:.1f} s wall, "
            f"{batches['cpu']:.1f} s of it its own CPU ({batches['wall'] - batches['cpu']:.1f} s "
            f"waiting); the rest of the wall time waiting for pages or starting"
        )
    print()
    print(
        "| database | path | people | groups | memberships | wall s (cpu s) | PostgreSQL cpu s "
        "| Okta server cpu s | requests | minimum pages | ratio | load average |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {database.dialect} | {args.via} | {made['users']:,} | {args.groups:,} "
        f"| {made['memberships']:,} | {seconds} "
        f"| {'' if backends is None else f'{backends:.1f}'} | {server_cpu:.1f} "
        f"| {requests:,} (served {served:,}) | {minimum:,} | {requests / minimum:.2f} | {load} |"
    )
    assert made["memberships"] == memberships, (made, memberships)


if __name__ == "__main__":
    main()
