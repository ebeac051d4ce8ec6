"""Benchmark: the engine materialising, re-applying and revoking a 50k-member group's grants."""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import create_engine, delete, func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import DEFAULT_POSTGRES, insert_connector, postgres_database, sqlite_database
from provisioning.audit import log as audit
from provisioning.audit.log import Origin, Source
from provisioning.audit.models import AuditChainHead
from provisioning.connectors.models import (
    AccessLevel,
)
from provisioning.database import Database, utcnow
from provisioning.entitlements import engine
from provisioning.entitlements.models import Grant, Mapping
from provisioning.identity.models import Group, Membership, MembershipSource, User

BATCH = 5000
ORIGIN = Origin("bench", Source.ADMIN)


# -- databases --------------------------------------------------------------


# -- seeding ----------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    group_id: uuid.UUID
    connector_id: int
    noise_connector_id: int
    noise_grants: int


def _bulk(session: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), BATCH):
        session.execute(insert(table), rows[start : start + BATCH])


def _users(session: Any, prefix: str, count: int) -> list[uuid.UUID]:
    now = utcnow()
    rows = []
    for i in range(count):
        user_name = f"{prefix}.User{i:06d}@Bench.Example"
        rows.append(
            {
                "id": uuid.uuid4(),
                "user_name": user_name,
                "user_name_key": user_name.lower(),
                "external_id": f"00u{prefix}{i:06d}",
                "display_name": f"{prefix} user {i}",
                "display_name_key": f"{prefix} user {i}".lower(),
                "email": user_name.lower(),
                "email_key": user_name.lower(),
                "active": True,
                "created_at": now,
                "updated_at": now,
            }
        )
    _bulk(session, User, rows)
    return [row["id"] for row in rows]


def _group(session: Any, name: str, members: list[uuid.UUID]) -> uuid.UUID:
    now = utcnow()
    group_id = uuid.uuid4()
    session.execute(
        insert(Group),
        [
            {
                "id": group_id,
                "display_name": name,
                "display_name_key": name.lower(),
                "external_id": f"00g{name}",
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    _bulk(
        session,
        Membership,
        [
            {
                "user_id": user_id,
                "group_id": group_id,
                "present": True,
                "source": MembershipSource.SCIM,
                "published_at": now,
                "updated_at": now,
            }
            for user_id in members
        ],
    )
    return group_id


def _map(session: Any, group_id: uuid.UUID, connector_id: int) -> int:
    now = utcnow()
    return session.execute(
        insert(Mapping)
        .values(
            group_id=group_id,
            connector_id=connector_id,
            access_level=AccessLevel.READ_WRITE,
            created_by="bench",
            created_at=now,
            updated_at=now,
        )
        .returning(Mapping.id)
    ).scalar_one()


def seed(database: Database, users: int) -> Seeded:
    """N users in one (not yet mapped) group, plus N/5 others already holding another connector."""
    noise = max(users // 5, 1)
    with database.transaction() as session:
        members = _users(session, "member", users)
        group_id = _group(session, "bench-target", members)
        connector_id = insert_connector(session, "bench-target", ("web", "desktop"))
        noise_members = _users(session, "noise", noise)
        noise_group_id = _group(session, "bench-noise", noise_members)
        noise_connector_id = insert_connector(session, "bench-noise", ("web", "desktop"))
        _map(session, noise_group_id, noise_connector_id)
    # The background grants go through the engine (untimed) so that grants and
    # audit_events both hold rows, consistently, before the measurement starts.
    with database.transaction() as session:
        diff = engine.apply(session, engine.Affected.group(noise_group_id), ORIGIN)
    return Seeded(group_id, connector_id, noise_connector_id, len(diff.created))


# -- measuring --------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    materialise_s: float
    created: int
    audit_events: int
    noop_s: float
    noop_changes: int
    revoke_s: float
    revoked: int
    revoke_audit_events: int

    @property
    def grants_per_s(self) -> float:
        return self.created / self.materialise_s


def _live(database: Database, connector_id: int) -> int:
    with database.reader() as session:
        return session.scalar(
            select(func.count())
            .select_from(Grant)
            .where(Grant.connector_id == connector_id, Grant.revoked_at.is_(None))
        )


def _audit_head(database: Database) -> int:
    with database.reader() as session:
        return session.scalar(select(AuditChainHead.last_event_id).where(AuditChainHead.id == 1))


def _timed_apply(database: Database, group_id: uuid.UUID) -> tuple[float, engine.Diff]:
    """Wall time of one engine run for the group, transaction commit included."""
    started = time.perf_counter()
    with database.transaction() as session:
        diff = engine.apply(session, engine.Affected.group(group_id), ORIGIN)
    return time.perf_counter() - started, diff


def measure(database: Database, users: int) -> Run:
    seeded = seed(database, users)

    with database.transaction() as session:
        mapping_id = _map(session, seeded.group_id, seeded.connector_id)
    events_before = _audit_head(database)
    materialise_s, diff = _timed_apply(database, seeded.group_id)
    audit_events = _audit_head(database) - events_before
    created = len(diff.created)
    check(created == users, f"created {created} grants, expected {users}")
    check(not diff.revoked and not diff.updated, f"unexpected changes: {diff.summary()}")
    live = _live(database, seeded.connector_id)
    check(live == users, f"{live} live grants after materialising, expected {users}")

    noop_s, noop = _timed_apply(database, seeded.group_id)
    check(not noop, f"second apply was not a no-op: {noop.summary()}")

    with database.transaction() as session:
        session.execute(delete(Mapping).where(Mapping.id == mapping_id))
    events_before = _audit_head(database)
    revoke_s, revoke = _timed_apply(database, seeded.group_id)
    revoke_audit_events = _audit_head(database) - events_before
    check(len(revoke.revoked) == users, f"revoked {len(revoke.revoked)}, expected {users}")
    live = _live(database, seeded.connector_id)
    check(live == 0, f"{live} live grants left after revoking all")
    noise_live = _live(database, seeded.noise_connector_id)
    check(
        noise_live == seeded.noise_grants,
        f"background grants changed: {noise_live} live, expected {seeded.noise_grants}",
    )
    with database.reader() as session:
        verification = audit.verify(session)
    check(verification.intact, f"audit chain broken: {verification.problem}")
    check(
        verification.checked == seeded.noise_grants + 2 * users,
        f"audit chain has {verification.checked} events, expected "
        f"{seeded.noise_grants + 2 * users}",
    )

    return Run(
        materialise_s=materialise_s,
        created=created,
        audit_events=audit_events,
        noop_s=noop_s,
        noop_changes=len(noop.created) + len(noop.revoked) + len(noop.updated),
        revoke_s=revoke_s,
        revoked=len(revoke.revoked),
        revoke_audit_events=revoke_audit_events,
    )


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"benchmark check failed: {message}")


# -- reporting --------------------------------------------------------------


def postgres_version(base_url: str) -> str:
    admin = create_engine(base_url)
    try:
        with admin.connect() as conn:
            return conn.execute(text("SHOW server_version")).scalar_one()
    finally:
        admin.dispose()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(pg_version: str | None) -> list[tuple[str, str]]:
    import psycopg

    return [
        ("nproc", str(os.cpu_count())),
        ("cpu", cpu_model()),
        ("os", platform.platform()),
        ("python", platform.python_version()),
        ("sqlalchemy", sqlalchemy.__version__),
        ("sqlite", sqlite3.sqlite_version),
        ("psycopg", psycopg.__version__),
        ("postgresql server", pg_version or "not measured"),
    ]


def _median(runs: list[Run], figure: Callable[[Run], float]) -> float:
    return statistics.median(figure(run) for run in runs)


def report(users: int, results: dict[str, list[Run]], info: list[tuple[str, str]]) -> str:
    lines = ["Machine:", ""]
    lines += [f"- {name}: {value}" for name, value in info]
    lines += [
        "",
        "| database | users | materialise s (median) | grants/s | no-op rerun s | revoke-all s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        lines.append(
            f"| {name} | {users:,} "
            f"| {_median(runs, lambda r: r.materialise_s):.2f} "
            f"| {_median(runs, lambda r: r.grants_per_s):,.0f} "
            f"| {_median(runs, lambda r: r.noop_s):.2f} "
            f"| {_median(runs, lambda r: r.revoke_s):.2f} |"
        )
    lines += [
        "",
        "Runs:",
        "",
        "| database | run | materialise s | grants created | grants/s | audit events "
        "| no-op rerun s | revoke-all s | revoked | audit events |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        for i, run in enumerate(runs, 1):
            lines.append(
                f"| {name} | {i} | {run.materialise_s:.2f} | {run.created:,} "
                f"| {run.grants_per_s:,.0f} | {run.audit_events:,} | {run.noop_s:.2f} "
                f"| {run.revoke_s:.2f} | {run.revoked:,} | {run.revoke_audit_events:,} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=50_000, help="members of the group")
    parser.add_argument("--repeat", type=int, default=3, help="runs per database (median kept)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL")
    parser.add_argument("--skip-postgres", action="store_true", help="measure SQLite only")
    args = parser.parse_args(argv)
    if args.users < 1 or args.repeat < 1:
        parser.error("--users and --repeat must be at least 1")

    databases: dict[str, Callable[[], Any]] = {"SQLite": sqlite_database}
    pg_version = None
    if not args.skip_postgres:
        pg_version = postgres_version(args.postgres)
        databases[f"PostgreSQL {pg_version.split()[0]}"] = lambda: postgres_database(args.postgres)

    results: dict[str, list[Run]] = {}
    for name, make in databases.items():
        runs = results.setdefault(name, [])
        for i in range(1, args.repeat + 1):
            with make() as database:
                run = measure(database, args.users)
            runs.append(run)
            print(
                f"{name} run {i}/{args.repeat}: materialise {run.materialise_s:.2f}s "
                f"({run.created:,} grants, {run.audit_events:,} audit events), "
                f"no-op {run.noop_s:.2f}s, revoke-all {run.revoke_s:.2f}s "
                f"({run.revoked:,} revoked) -- checks passed",
                file=sys.stderr,
                flush=True,
            )

    print(report(args.users, results, machine_info(pg_version)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
