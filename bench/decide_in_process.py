"""Benchmark: one decision's own cost, in process, on the data of bench/decision_api.py.

No HTTP and no token check: ``decisions.decide`` on one kept connection for
random (user, connector, action) questions, as the hot path runs it. Made to
compare two trees of the code on the same database, so the difference is the
code's alone: seed once with ``--seed``, then run each tree in turn (its
directory first on ``PYTHONPATH``), several times, alternating.

    .venv/bin/python bench/decide_in_process.py --url sqlite:////tmp/d.db --seed
    cd /tmp && PYTHONPATH=/path/to/tree python /path/to/tree/bench/decide_in_process.py \\
        --url sqlite:////tmp/d.db
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import select

# Appended, not prepended: a tree named first on PYTHONPATH is the one measured.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.decision_api import ACTIONS, seed
from bench.fixtures import seeded_arguments
from provisioning.connectors.models import Interface
from provisioning.database import Database
from provisioning.entitlements.decisions import Question, decide
from provisioning.identity.models import User


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    seeded_arguments(parser)
    parser.add_argument("--calls", type=int, default=20_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    database = Database(args.url)
    if args.seed:
        database.upgrade()
        seed(database, args.users, args.connectors)
        return 0
    with database.reader() as session:
        users = [str(u) for u in session.scalars(select(User.id))]
    names = [name for name, _, _ in ACTIONS] + ["unknown_tool"]
    rng = random.Random(7)
    questions = [
        Question(
            rng.choice(users),
            f"connector-{rng.randrange(args.connectors)}",
            rng.choice(names),
            Interface.WEB,
        )
        for _ in range(args.calls)
    ]
    per_call = []
    with database.engine.connect() as connection:
        for question in questions[:1000]:  # warm the statement and the page cache
            decide(connection, question)
        for _ in range(args.rounds):
            started = time.perf_counter()
            for question in questions:
                decide(connection, question)
            per_call.append((time.perf_counter() - started) / len(questions) * 1000)
            connection.rollback()
    print(
        f"{database.dialect}: {statistics.median(per_call):.4f} ms per decision "
        f"(median of {args.rounds} rounds of {args.calls}; rounds "
        + ", ".join(f"{t:.4f}" for t in per_call)
        + ")"
    )
    database.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
