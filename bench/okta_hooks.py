"""Benchmark: Okta event hook acknowledgement latency under load, and deactivation-to-revoked time.

Against a live `provisioning serve` (one gunicorn worker, its inbox thread
applying deliveries) on SQLite and on PostgreSQL, with 100k users, 2,000
groups, 200 connectors and 1M grants loaded:

1. ack latency: deliveries of one `group.user_membership.add` event each, sent
   open-loop at a fixed rate (default 200/s for 60 s) from 8 client threads;
   latency is measured from each request's *scheduled* send time to its
   answer, so a slow server is not hidden by a slowed client;
2. deactivation: for sampled users, one at a time, the time from sending a
   `user.lifecycle.deactivate` delivery until a separate connection sees every
   grant of that user revoked and committed.

    .venv/bin/python bench/okta_hooks.py [--rate 200] [--duration 60] [--samples 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import DEFAULT_POSTGRES, connector_rows, database_for
from provisioning.connectors.models import Connector
from provisioning.database import Database, utcnow
from provisioning.entitlements.models import Grant, Mapping
from provisioning.identity.models import Group, Membership, User

SECRET = "bench-hook-secret"
BATCH = 10_000


# -- data ---------------------------------------------------------------------


def seed(database: Database, users: int, groups: int, connectors: int, per_user: int) -> dict:
    """Bulk-load an organisation whose grants already match its mappings."""
    now = utcnow()
    user_ids = [uuid.uuid4() for _ in range(users)]
    group_ids = [uuid.uuid4() for _ in range(groups)]
    with database.engine.begin() as conn:
        conn.execute(insert(Connector), connector_rows(connectors))
        connector_ids = list(conn.scalars(select(Connector.id).order_by(Connector.id)))
        conn.execute(
            insert(Group),
            [
                {
                    "id": gid,
                    "display_name": f"g{i}",
                    "display_name_key": f"g{i}",
                    "external_id": f"00g{i}",
                    "created_at": now,
                    "updated_at": now,
                }
                for i, gid in enumerate(group_ids)
            ],
        )
        # Group g grants connector g mod C; consecutive groups give distinct connectors.
        conn.execute(
            insert(Mapping),
            [
                {
                    "group_id": gid,
                    "connector_id": connector_ids[i % connectors],
                    "access_level": "read",
                    "created_by": "bench",
                    "created_at": now,
                    "updated_at": now,
                }
                for i, gid in enumerate(group_ids)
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
                        "external_id": f"00u{u}",
                        "active": True,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for u in range(start, min(start + BATCH, users))
                ],
            )
        rows_m, rows_g = [], []
        for u in range(users):
            for k in range(per_user):
                g = (u * per_user + k) % groups
                rows_m.append(
                    {
                        "user_id": user_ids[u],
                        "group_id": group_ids[g],
                        "present": True,
                        "source": "scim",
                        "updated_at": now,
                    }
                )
                rows_g.append(
                    {
                        "user_id": user_ids[u],
                        "connector_id": connector_ids[g % connectors],
                        "access_level": "read",
                        "granted_at": now,
                    }
                )
            if len(rows_m) >= BATCH:
                conn.execute(insert(Membership), rows_m)
                conn.execute(insert(Grant), rows_g)
                rows_m, rows_g = [], []
        if rows_m:
            conn.execute(insert(Membership), rows_m)
            conn.execute(insert(Grant), rows_g)
        if database.dialect == "postgresql":
            conn.execute(text("ANALYZE"))
    return {"user_ids": user_ids, "groups": groups, "users": users}


# -- databases and server -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(database: Database):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database.url, "PROVISIONING_OKTA_HOOK_SECRETS": SECRET}
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioning.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=20)


def delivery(*events: dict) -> bytes:
    return json.dumps(
        {
            "eventType": "com.okta.event_hook",
            "eventTypeVersion": "1.0",
            "cloudEventsVersion": "0.1",
            "eventId": str(uuid.uuid4()),
            "data": {"events": list(events)},
        }
    ).encode()


def event(event_type: str, targets: list[dict]) -> dict:
    return {
        "uuid": str(uuid.uuid4()),
        "published": utcnow().isoformat(),
        "eventType": event_type,
        "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@example.com"},
        "outcome": {"result": "SUCCESS"},
        "target": targets,
    }


def user_target(u: int) -> dict:
    return {"id": f"00u{u}", "type": "User", "alternateId": f"user{u}@example.com"}


def post(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request(
        "POST",
        "/hooks/okta/events",
        body=body,
        headers={"Authorization": SECRET, "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    response.read()
    return response.status


# -- measurements -------------------------------------------------------------


def ack_latency(port: int, data: dict, rate: float, duration: float, threads: int = 8) -> dict:
    per_thread = rate / threads
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.perf_counter() + 0.5

    def sender(index: int) -> None:
        import random

        rng = random.Random(index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        n = 0
        while True:
            scheduled = start + (n + index / threads) / per_thread
            if scheduled - start > duration:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            u, g = rng.randrange(data["users"]), rng.randrange(data["groups"])
            body = delivery(
                event(
                    "group.user_membership.add",
                    [
                        user_target(u),
                        {"id": f"00g{g}", "type": "UserGroup", "displayName": f"g{g}"},
                    ],
                )
            )
            try:
                status = post(conn, body)
            except (OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                status = 0
            mine.append(time.perf_counter() - scheduled)
            if status != 200:
                with lock:
                    errors[0] += 1
            n += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=sender, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    latencies.sort()
    return {
        "sent": len(latencies),
        "errors": errors[0],
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
    }


def drain_time(database: Database) -> float:
    from provisioning.okta.inbox import depth

    started = time.perf_counter()
    while True:
        with database.reader() as session:
            if depth(session) == 0:
                return time.perf_counter() - started
        time.sleep(0.1)


def deactivation_latency(port: int, database: Database, data: dict, samples: int) -> dict:
    import random

    rng = random.Random(7)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    chosen = rng.sample(range(data["users"]), samples)
    times, grants_revoked = [], 0
    with database.engine.connect() as reader:
        for u in chosen:
            user_id = data["user_ids"][u]
            live = select(func.count(Grant.id)).where(
                Grant.user_id == user_id, Grant.revoked_at.is_(None)
            )
            held = reader.scalar(live)
            reader.rollback()
            body = delivery(event("user.lifecycle.deactivate", [user_target(u)]))
            started = time.perf_counter()
            assert post(conn, body) == 200
            while True:
                remaining = reader.scalar(live)
                reader.rollback()
                if remaining == 0:
                    break
                time.sleep(0.002)
            times.append(time.perf_counter() - started)
            grants_revoked += held
    times.sort()
    return {
        "samples": samples,
        "grants_per_user": grants_revoked / samples,
        "p50_ms": 1000 * statistics.median(times),
        "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))],
        "max_ms": 1000 * times[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=2_000)
    parser.add_argument("--connectors", type=int, default=200)
    parser.add_argument("--grants-per-user", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()

    rows = []
    for kind in args.databases.split(","):
        with database_for(kind, args.postgres) as database:
            started = time.perf_counter()
            data = seed(database, args.users, args.groups, args.connectors, args.grants_per_user)
            with database.reader() as session:
                grants = session.scalar(select(func.count(Grant.id)))
            print(
                f"{kind}: seeded {args.users:,} users, {grants:,} grants "
                f"in {time.perf_counter() - started:.0f}s",
                flush=True,
            )
            with served(database) as port:
                ack = ack_latency(port, data, args.rate, args.duration)
                drained = drain_time(database)
                print(f"{kind}: ack {ack}, drained in {drained:.1f}s", flush=True)
                deact = deactivation_latency(port, database, data, args.samples)
                print(f"{kind}: deactivation {deact}", flush=True)
            rows.append((kind, grants, ack, drained, deact))

    print()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    print(
        "| database | grants loaded | deliveries sent | errors | ack p50 ms | ack p99 ms "
        "| inbox drained after s | deactivate→revoked p50 ms | p99 ms | max ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, grants, ack, drained, deact in rows:
        print(
            f"| {kind} | {grants:,} | {ack['sent']:,} | {ack['errors']} | {ack['p50_ms']:.1f} "
            f"| {ack['p99_ms']:.1f} | {drained:.1f} | {deact['p50_ms']:.1f} "
            f"| {deact['p99_ms']:.1f} | {deact['max_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
