"""Offboarding to revoked, committed and acknowledged downstream; outbox delivery throughput.

Loads --users users holding --connectors grants each (100k x 10 = 1M by
default), starts the service under gunicorn (deploy/gunicorn.conf.py), a
webhook receiver that verifies every signature and scim2-server's in-memory
SCIM server (holding the offboarded users in one group per connector), both on
127.0.0.1 in a process of their own, and `provisioning worker` processes that
deliver the outbox. Then:

1. **Offboarding**: --offboardings HR calls (`POST /api/v1/offboardings`), one
   every --spacing seconds, each revoking 10 grants. Measured: the call
   (request to answer, the revocations committed before the answer), and for
   each target the time from the request to the last of its messages being
   acknowledged (``delivered_at``).
2. **Throughput**: with the workers stopped, --backlog users are offboarded
   (each 10 revocations + 1 user event, to the webhook target), then 1, and
   then 2 workers drain the backlog: messages/s. The receiver's ceiling is
   measured too: 8 threads posting the same signed events straight at it.

Run: ``python bench/offboarding_delivery.py [--postgres]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_network
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from decision_api import POSTGRES, free_port, seed, serve  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from provisioning.audit.log import Origin, Source  # noqa: E402
from provisioning.database import Database  # noqa: E402
from provisioning.delivery import targets  # noqa: E402
from provisioning.delivery.egress import Egress  # noqa: E402
from provisioning.delivery.models import MessageState, OutboxMessage, Target, TargetKind  # noqa: E402
from provisioning.identity.models import User  # noqa: E402
from provisioning.offboarding import requests  # noqa: E402
from provisioning.offboarding.models import Offboarding  # noqa: E402
from provisioning.tokens import credentials  # noqa: E402

SECRET = "whsec-bench-0123456789"
SCIM_TOKEN = "scim-bench-0123456789"
LOCAL = "127.0.0.1/32"  # where the downstream servers listen, allowed by the egress policy
ADMIN = Origin("bench", Source.CLI)


# -- the downstream side, in a process of its own --------------------------------------


def downstream(webhook_port: int, scim_port: int, people_file: str, connectors: int) -> None:
    """Webhook receiver (verifies, dedupes, counts) and a SCIM server holding ``people``."""
    import datetime as dt
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request

    from scim2_models import Group, Meta
    from scim2_server.memory import InMemoryStorage
    from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
    from scim2_server.utils import load_default_provider
    from werkzeug.serving import WSGIRequestHandler, make_server
    from werkzeug.wrappers import Request, Response

    from provisioning.delivery import webhook

    seen: set[str] = set()
    counts = {"received": 0, "unique": 0, "bad_signature": 0}
    lock = threading.Lock()

    def receiver(environ, start_response):
        request = Request(environ)
        if request.path == "/stats":
            return Response(json.dumps(counts), mimetype="application/json")(
                environ, start_response
            )
        body = request.get_data()
        if not webhook.verify(SECRET, request.headers.get(webhook.SIGNATURE_HEADER, ""), body):
            with lock:
                counts["bad_signature"] += 1
            return Response("bad signature", status=401)(environ, start_response)
        event_id = request.headers[webhook.EVENT_ID_HEADER]
        with lock:
            counts["received"] += 1
            if event_id not in seen:
                seen.add(event_id)
                counts["unique"] += 1
        return Response(status=204)(environ, start_response)

    provider = load_default_provider()
    provider.config.authentication_schemes = [BEARER_TOKEN_SCHEME]
    user_model = provider.model_for(next(rt for rt in provider.resource_types if rt.id == "User"))
    storage = InMemoryStorage()
    now = dt.datetime.now(dt.UTC)
    people = json.loads(Path(people_file).read_text())
    resources = []
    for n, (ident, name) in enumerate(people):
        user = user_model.model_validate(
            {"id": f"u{n}", "userName": name, "externalId": ident, "active": True}
        )
        user.meta = Meta(resource_type="User", created=now, last_modified=now, version='W/"1"')
        resources.append(user)
    for c in range(connectors):
        group = Group.model_validate(
            {
                "id": f"g{c}",
                "displayName": f"connector-{c}",
                "members": [{"value": f"u{n}"} for n in range(len(people))],
            }
        )
        group.meta = Meta(resource_type="Group", created=now, last_modified=now, version='W/"1"')
        resources.append(group)
    storage.resources = resources
    scim = BearerTokenApplication(storage, provider, bearer_tokens=[SCIM_TOKEN])
    WSGIRequestHandler.protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do
    servers = [
        make_server("127.0.0.1", webhook_port, receiver, threaded=True),
        make_server("127.0.0.1", scim_port, scim, threaded=True),
    ]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


# -- helpers ----------------------------------------------------------------------------


def worker(url: str) -> subprocess.Popen:
    """A `provisioning worker`, returned once it is up (it says so on stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioning.cli", "worker"],
        env={
            **os.environ,
            "DATABASE_URL": url,
            "PROVISIONING_DELIVERY_POLL_SECONDS": "0.05",
            "PROVISIONING_DELIVERY_ALLOWED_NETWORKS": LOCAL,  # the downstream servers
            # No scheduled jobs in the way: the next run of each is far off.
            **{
                f"PROVISIONING_SCHEDULE_{job}": "0 0 1 1 *"
                for job in ("STALE_SCAN", "EXPIRY", "OFFBOARDINGS", "OKTA_INBOX")
            },
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stderr:
        if line.startswith("worker up"):
            break
    threading.Thread(target=lambda: process.stderr.read(), daemon=True).start()
    return process


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def pending(database: Database) -> int:
    with database.reader() as session:
        return session.scalar(
            select(func.count(OutboxMessage.id)).where(
                OutboxMessage.state != MessageState.DELIVERED
            )
        )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def post(url: str, token: str, body: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def ceiling(port: int, seconds: float = 5) -> float:
    """Signed events posted straight at the receiver by 8 threads: requests/s."""
    import httpx2

    from provisioning.delivery import webhook

    body = json.dumps({"id": "x", "type": "grant.revoked", "data": {}}).encode()
    stop_at = time.monotonic() + seconds
    done = [0] * 8

    def run(n: int) -> None:
        with httpx2.Client() as client:
            while time.monotonic() < stop_at:
                client.post(
                    f"http://127.0.0.1:{port}/events",
                    content=body,
                    headers={
                        webhook.EVENT_ID_HEADER: str(uuid.uuid4()),
                        webhook.SIGNATURE_HEADER: webhook.sign(SECRET, int(time.time()), body),
                    },
                )
                done[n] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, range(8)))
    return sum(done) / (time.monotonic() - started)


# -- the run ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--connectors", type=int, default=10)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--offboardings", type=int, default=100)
    parser.add_argument("--spacing", type=float, default=0.2)
    parser.add_argument("--backlog", type=int, default=2000, help="users offboarded at once")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-offboarding-"))
    schema = None
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with create_engine(POSTGRES).begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{workdir / 'bench.db'}"
    database = Database(url)
    processes: list[subprocess.Popen] = []
    results: dict = {"database": database.dialect, "users": args.users}
    try:
        database.upgrade()
        started = time.monotonic()
        seed(database, args.users, args.connectors)
        print(
            f"  seeded {args.users} users x {args.connectors} grants in "
            f"{time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
        with database.reader() as session:
            everyone = session.execute(select(User.id, User.user_name)).all()
        rng = random.Random(1)
        chosen = rng.sample(everyone, args.offboardings + args.backlog)
        sample, backlog = chosen[: args.offboardings], chosen[args.offboardings :]
        people_file = workdir / "people.json"
        people_file.write_text(json.dumps([[str(i), name] for i, name in sample]))

        webhook_port, scim_port, web_port = free_port(), free_port(), free_port()
        side = multiprocessing.get_context("fork").Process(
            target=downstream,
            args=(webhook_port, scim_port, str(people_file), args.connectors),
            daemon=True,
        )
        side.start()
        with database.transaction() as session:
            token = credentials.create(session, "bench-hr", ["offboarding:write"], ADMIN)
            hook = targets.create(
                session,
                ADMIN,
                name="webhook",
                kind=TargetKind.WEBHOOK,
                url=targets.check_url(
                    f"http://127.0.0.1:{webhook_port}/events", Egress((ip_network(LOCAL),))
                ),
                secret=SECRET,
                connectors=None,
                max_attempts=15,
            )
            scim = targets.create(
                session,
                ADMIN,
                name="scim",
                kind=TargetKind.SCIM,
                url=targets.check_url(
                    f"http://127.0.0.1:{scim_port}/v2", Egress((ip_network(LOCAL),))
                ),
                secret=SCIM_TOKEN,
                connectors=None,
                max_attempts=15,
            )
            hook_id, scim_id = hook.id, scim.id
        processes.append(
            serve(
                None,
                {"DATABASE_URL": url, "PROVISIONING_DELIVERY_ALLOWED_NETWORKS": LOCAL},
                web_port,
            )
        )
        delivering = [worker(url)]

        # 1. offboarding: call, commit, acknowledgement per target
        calls, sent_at, ids = [], [], []
        for _, user_name in sample:
            before_wall, before = time.time(), time.perf_counter()
            answer = post(
                f"http://127.0.0.1:{web_port}/api/v1/offboardings",
                token,
                {"userName": user_name, "reason": "left"},
            )
            calls.append(time.perf_counter() - before)
            assert answer["state"] == "done" and len(answer["revoked"]) == args.connectors
            sent_at.append(before_wall)
            ids.append(answer["id"])
            time.sleep(args.spacing)
        deadline = time.monotonic() + 300
        while pending(database) and time.monotonic() < deadline:
            time.sleep(0.2)
        acks: dict[int, list[float]] = {hook_id: [], scim_id: []}
        with database.reader() as session:
            for offboarding_id, at in zip(ids, sent_at, strict=True):
                message_ids = session.get(Offboarding, offboarding_id).outbox_ids
                rows = session.execute(
                    select(OutboxMessage.target_id, func.max(OutboxMessage.delivered_at))
                    .where(OutboxMessage.id.in_(message_ids))
                    .group_by(OutboxMessage.target_id)
                ).all()
                for target_id, last in rows:
                    acks[target_id].append(last.timestamp() - at)
        results["offboarding"] = {
            "n": len(calls),
            "call_p50_ms": statistics.median(calls) * 1000,
            "call_p99_ms": pct(calls, 0.99) * 1000,
            "webhook_ack_p50_ms": statistics.median(acks[hook_id]) * 1000,
            "webhook_ack_p99_ms": pct(acks[hook_id], 0.99) * 1000,
            "scim_ack_p50_ms": statistics.median(acks[scim_id]) * 1000,
            "scim_ack_p99_ms": pct(acks[scim_id], 0.99) * 1000,
        }
        print(f"  {results['offboarding']}", file=sys.stderr)
        stop(delivering)

        # 2. throughput: a backlog drained by one, then two workers
        with database.transaction() as session:
            session.get(Target, scim_id).enabled = False
        throughput = {}
        half = len(backlog) // 2
        for workers, batch in ((1, backlog[:half]), (2, backlog[half:])):
            delivering = [worker(url) for _ in range(workers)]
            with database.reader() as session:
                last = session.scalar(select(func.max(OutboxMessage.id)))
            enqueue_started = time.perf_counter()
            with database.transaction() as session:
                for user_id, _ in batch:
                    user = session.get(User, user_id)
                    requests.request(
                        session,
                        ADMIN,
                        identified_by="userName",
                        identifier=user.user_name,
                        reason="bench",
                    )
            # From the commit of the backlog (every message at once) to the last acknowledgement.
            started = time.perf_counter()
            with database.reader() as session:
                owed = session.scalar(
                    select(func.count(OutboxMessage.id)).where(OutboxMessage.id > last)
                )
            while pending(database):
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            stop(delivering)
            throughput[workers] = {
                "messages": owed,
                "enqueue_seconds": started - enqueue_started,
                "seconds": elapsed,
                "per_second": owed / elapsed,
            }
            print(f"  {workers} worker(s): {throughput[workers]}", file=sys.stderr)
        results["throughput"] = throughput
        results["receiver_ceiling_per_second"] = ceiling(webhook_port)
        with urllib.request.urlopen(f"http://127.0.0.1:{webhook_port}/stats") as response:
            results["receiver"] = json.loads(response.read())
        print(json.dumps(results, indent=2))
    finally:
        stop(processes)
        database.dispose()
        if schema:
            with create_engine(POSTGRES).begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
