"""How soon /readyz says 503 once a background loop stops or its scheduler dies.

Serves the app over HTTP on 127.0.0.1 (Werkzeug, in this process) with the
background jobs running as ``provisioning serve`` runs them, polls ``/readyz``
every 5 ms, and measures from the moment of the failure to the first 503:

1. **delivery worker stopped**: its loop returns while still registered
   (``--repeat`` times, the default settings);
2. **job thread killed by a bad schedule**: a crontab the scheduler cannot read
   (settings copied without validation, as before they checked it), from the
   start of the background services;
3. **scheduler thread died**: a trigger that raises on its second look ends
   APScheduler's thread; its heartbeat falls silent (503 naming ``scheduler``
   after ``3 x PROVISIONING_LEADER_POLL_SECONDS``), then the leader gives up
   (503 naming ``jobs``), with ``--leader-poll`` (default 15 s, the setting's default).

Run: ``python bench/liveness.py [--repeat 20] [--leader-poll 15]`` (on SQLite;
``DATABASE_URL`` for PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apscheduler.triggers.base import BaseTrigger  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from jobs import runner  # noqa: E402
from provisioning.database import Database  # noqa: E402
from provisioning.settings import load  # noqa: E402
from provisioning.web.app import create_app  # noqa: E402


class DiesOnSecondLook(BaseTrigger):
    def __init__(self) -> None:
        self.looks = 0

    def get_next_fire_time(self, previous_fire_time, now):
        self.looks += 1
        if self.looks > 1:
            raise RuntimeError("this trigger cannot say when")
        return now


def readyz(base: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def names(body: dict) -> set[str]:
    return {loop["loop"] for loop in body.get("loops", [])}


def first(base: str, predicate, within: float) -> tuple[float, dict]:
    """Poll /readyz until ``predicate(status, body)``; (the monotonic time, the body)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status, body = readyz(base)
        if predicate(status, body):
            return time.monotonic(), body
        time.sleep(0.005)
    raise SystemExit(f"/readyz never answered as expected within {within} s")


def serving(settings, database):
    app = create_app(settings, database, background=False)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--leader-poll", type=float, default=15)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{tempfile.mkdtemp()}/liveness.db"
    database = Database(load(database_url=url).database_url)
    database.upgrade()
    settings = load(database_url=url)
    server, base = serving(settings, database)
    results: dict[str, object] = {"database": database.dialect}

    # 1. The delivery worker's loop returns while still registered.
    delays = []
    for _ in range(args.repeat):
        background = runner.start_in_background(database, settings)
        first(base, lambda status, body: status == 200 and "outbox-delivery" in names(body), 60)
        killed = time.monotonic()
        background.deliverer._stop.set()
        background.deliverer._wake.set()
        seen, body = first(base, lambda status, body: status == 503, 60)
        delays.append(seen - killed)
        background.stop()
    results["delivery worker stopped -> 503 (ms)"] = {
        "median": round(statistics.median(delays) * 1000, 1),
        "max": round(max(delays) * 1000, 1),
        "n": len(delays),
        "detail": body["detail"],
    }

    # 2. A crontab the scheduler cannot read kills the job thread as it takes the lead.
    bad = settings.model_copy(update={"schedule_outbox_prune": "30 4 * *"})
    started = time.monotonic()
    background = runner.start_in_background(database, bad)
    seen, body = first(base, lambda status, body: status == 503, 60)
    results["bad schedule: start -> 503 (ms)"] = {
        "ms": round((seen - started) * 1000, 1),
        "detail": body["detail"],
    }
    background.stop()

    # 3. The scheduler's own thread dies; its heartbeat falls silent.
    polled = settings.model_copy(update={"leader_poll_seconds": args.leader_poll})
    background = runner.start_in_background(database, polled)
    if not background.worker.is_leader.wait(120):
        raise SystemExit("no leader")
    while background.worker.scheduler is None:
        time.sleep(0.01)
    first(base, lambda status, body: status == 200 and "scheduler" in names(body), 60)
    killed = time.monotonic()
    background.worker.scheduler.add_job(print, DiesOnSecondLook(), id="broken")
    bound = 3 * args.leader_poll
    stalled, body = first(base, lambda status, body: status == 503, bound + 60)
    named = body["detail"]
    gave_up, body = first(base, lambda status, body: "jobs has stopped" in str(body), bound + 60)
    results["scheduler thread died -> 503 (s)"] = {
        "leader_poll_seconds": args.leader_poll,
        "stall bound (s)": bound,
        "503 after (s)": round(stalled - killed, 2),
        "first detail": named,
        "leader gave up after (s)": round(gave_up - killed, 2),
        "then": body["detail"],
    }
    background.stop()
    server.shutdown()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
