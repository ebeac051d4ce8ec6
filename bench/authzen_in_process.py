"""Benchmark: an AuthZEN batch's and a resource search's own cost, in process.

No HTTP and no token check: ``Decider.run`` on one kept connection (a hot read) for a
batch of 100 evaluations of one random person over the 10 connectors of
bench/decision_api.py (random actions), for a COAZ-MCP ``tools/list`` batch of the
200-connector person of bench/authzen_api.py (100 ``tools/call`` evaluations, 20 tools of
each of 5 servers named by resource URI), and ``Searcher.run`` for that person's callable
tools of one server. CPU time per request (on SQLite it includes the database's work) and
wall time, medians and p99 over the repetitions. Made to compare two trees on one
database, as bench/decide_in_process.py: seed once with ``--seed``, then run each tree in
turn (its directory first on ``PYTHONPATH``), alternating.

    .venv/bin/python bench/authzen_in_process.py --url sqlite:////tmp/a.db --seed
    cd /tmp && PYTHONPATH=/path/to/tree python /path/to/tree/bench/authzen_in_process.py \\
        --url sqlite:////tmp/a.db
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Appended, not prepended: a tree named first on PYTHONPATH is the one measured.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.fixtures import seeded_arguments
from provisioning.connectors.models import Interface
from provisioning.database import Database
from provisioning.entitlements import authzen

ACTIONS = ["search", "read_item", "comment", "update_item", "delete_item", "unknown_tool"]
SEARCHER = "searcher@bench.example"
WIDE_URI = "https://mcp.bench.example/wide-"


def batch(users: int, connectors: int) -> dict[str, Any]:
    return {
        "subject": {"type": "user", "id": f"user{random.randrange(users):06d}@bench.example"},
        "context": {"interface": "web"},
        "evaluations": [
            {
                "action": {"name": random.choice(ACTIONS)},
                "resource": {
                    "type": "connector",
                    "id": f"connector-{random.randrange(connectors)}",
                },
            }
            for _ in range(100)
        ],
    }


def tools_list() -> dict[str, Any]:
    first = random.randrange(200 - 5)
    return {
        "subject": {"type": "identity", "id": SEARCHER},
        "action": {"name": "tools/call"},
        "context": {"interface": "web"},
        "evaluations": [
            {
                "resource": {
                    "type": "tool",
                    "id": f"tool_{i // 5:02d}",
                    "properties": {"mcp_server": f"{WIDE_URI}{first + i % 5:03d}"},
                }
            }
            for i in range(100)
        ],
    }


def search() -> dict[str, Any]:
    return {
        "subject": {"type": "identity", "id": SEARCHER},
        "action": {"name": "tools/call"},
        "resource": {
            "type": "tool",
            "properties": {"connector": f"wide-{random.randrange(200):03d}"},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    seeded_arguments(parser)
    parser.add_argument("--repeat", type=int, default=300, help="requests of each kind")
    args = parser.parse_args(argv)
    database = Database(args.url)
    if args.seed:
        from bench.authzen_api import seed_wide
        from bench.decision_api import seed

        database.upgrade()
        seed(database, args.users, args.connectors)
        seed_wide(database)
        return 0

    def evaluate(document: dict[str, Any]) -> Any:
        asked = authzen.batch(document)
        assert asked is not None
        return database.hot_read(
            lambda c: authzen.Decider(c, Interface.WEB).run(asked.items, asked.semantic)
        )

    def find(document: dict[str, Any]) -> Any:
        query = authzen.search("resource", document)
        return database.hot_read(
            lambda c: authzen.Searcher(authzen.Decider(c, Interface.WEB)).run(query)
        )

    kinds = {
        "evaluations (100)": lambda: evaluate(batch(args.users, args.connectors)),
        "evaluations (100 tools)": lambda: evaluate(tools_list()),
        "search/resource": lambda: find(search()),
    }
    for work in kinds.values():  # warm up: compiled statements, caches
        for _ in range(20):
            work()
    print("| request | CPU p50 ms | CPU p99 ms | wall p50 ms | wall p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, work in kinds.items():
        cpu, wall = [], []
        for _ in range(args.repeat):
            c, w = time.process_time(), time.perf_counter()
            work()
            cpu.append((time.process_time() - c) * 1000)
            wall.append((time.perf_counter() - w) * 1000)
        cpu.sort()
        wall.sort()
        p99 = int(len(cpu) * 0.99)
        print(
            f"| {name} | {statistics.median(cpu):.2f} | {cpu[p99]:.2f} "
            f"| {statistics.median(wall):.2f} | {wall[p99]:.2f} |"
        )
    database.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
