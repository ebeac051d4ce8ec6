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

Governance present (issue 21): ``--govern`` adds to a seeded database 50 separation-of-
duties rules, a request policy on every connector, 10,000 pending and 1,000 approved
call-approval tasks, and changes no decision (no action requires an approver): the
figures after it, against those before, are the cost of their presence. ``--approver``
then makes ``update_item`` of every connector require an approver: its evaluations
answer ``approval_required`` with a signed ``access_request``, and the kind
"evaluation (approved call)" presents an approval that allows it.
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
    parser.add_argument("--govern", action="store_true", help="add rules and approval tasks")
    parser.add_argument("--approver", action="store_true", help="update_item needs an approver")
    args = parser.parse_args(argv)
    database = Database(args.url)
    if args.govern or args.approver:
        if args.govern:
            govern(database, args.users)
        if args.approver:
            needs_approver(database)
        return 0
    if args.seed:
        from bench.authzen_api import seed_wide
        from bench.decision_api import seed

        database.upgrade()
        seed(database, args.users, args.connectors)
        seed_wide(database)
        return 0

    calls = calls_of()

    def decider(connection: Any) -> Any:
        if calls is None:  # a tree without call-level approval
            return authzen.Decider(connection, Interface.WEB)
        return authzen.Decider(connection, Interface.WEB, calls)

    def evaluate(document: dict[str, Any]) -> Any:
        asked = authzen.batch(document)
        assert asked is not None
        return database.hot_read(lambda c: decider(c).run(asked.items, asked.semantic))

    def one(document: dict[str, Any]) -> Any:
        question = authzen.evaluation(document)
        outcome = database.hot_read(lambda c: decider(c).decide(question))
        assert outcome.allowed == ("approval" in document["context"]), outcome
        return outcome

    def find(document: dict[str, Any]) -> Any:
        query = authzen.search("resource", document)
        return database.hot_read(lambda c: authzen.Searcher(decider(c)).run(query))

    kinds = {
        "evaluations (100)": lambda: evaluate(batch(args.users, args.connectors)),
        "evaluations (100 tools)": lambda: evaluate(tools_list()),
        "search/resource": lambda: find(search()),
    }
    approved = approved_calls(database, calls)
    if approved:
        looked_up = [a for a in approved if "state" not in a["context"]["approval"]]
        kinds["evaluation (approved call)"] = lambda: one(random.choice(looked_up))
    sealed = [a for a in approved if "state" in a["context"]["approval"]]
    if sealed:
        kinds["evaluation (approved call, state)"] = lambda: one(random.choice(sealed))
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


# -- governance present (issue 21) ---------------------------------------------------------

CALL_ARGUMENTS = {"item": 42}


def calls_of() -> Any:
    """The decision path's call-level approval settings, on a tree that has them."""
    try:
        from provisioning.entitlements import approvals
    except ImportError:
        return None
    signer = approvals.Signer("bench-approval-secret")
    endpoint = "https://pdp.bench.example/access/v1/requests"
    if "pdp" not in approvals.Calls.__dataclass_fields__:  # a tree that signs no states
        return approvals.Calls(lambda: signer, endpoint)  # type: ignore[call-arg]
    return approvals.Calls(lambda: signer, endpoint, "https://pdp.bench.example")


def govern(database: Database, users: int) -> None:
    """50 SoD rules, a request policy per connector, 10,000 pending and 1,000 approved call
    tasks on update_item (their arguments one digest), inserted directly."""
    import datetime as dt
    import secrets as tokens

    from sqlalchemy import insert, select

    from provisioning.connectors.models import Connector
    from provisioning.database import utcnow
    from provisioning.entitlements import approvals
    from provisioning.entitlements.models import SeparationRule
    from provisioning.identity.models import User
    from provisioning.requests.models import AccessRequest, RequestPolicy

    rng = random.Random(21)
    now = utcnow()
    with database.transaction() as session:
        connectors = session.execute(select(Connector.id, Connector.slug)).all()
        people = list(session.scalars(select(User.id).limit(users)))
        ids = [c.id for c in connectors]
        session.execute(
            insert(SeparationRule),
            [
                {
                    "name": f"rule {i}",
                    "these": (picked := rng.sample(ids, 4))[:2],
                    "those": picked[2:],
                    "owner": "risk@bench.example",
                    "reason": "bench",
                    "created_by": "bench",
                    "created_at": now,
                }
                for i in range(50)
            ],
        )
        session.execute(
            insert(RequestPolicy),
            [
                {
                    "connector_id": c.id,
                    "approvers": ["owner"],
                    "max_days": 14,
                    "decide_within_days": 5,
                    "updated_by": "bench",
                    "updated_at": now,
                }
                for c in connectors
            ],
        )
        version = approvals.policy_version("needs_approval", True, ["owner"])
        digest = approvals.arguments_digest({"arguments": CALL_ARGUMENTS})
        bench_connectors = [c for c in connectors if c.slug.startswith("connector-")]
        rows = []
        for i in range(11_000):
            connector = rng.choice(bench_connectors)
            person = rng.choice(people)
            approved = i >= 10_000
            rows.append(
                {
                    "user_id": person,
                    "requested_by_id": person,
                    "requested_by": "bench",
                    "connector_id": connector.id,
                    "access_level": "read_write",
                    "actions": ["update_item"],
                    "justification": "bench",
                    "duration_days": 0,
                    "approvers": ["owner"],
                    "stage": 0,
                    "state": "approved" if approved else "pending",
                    "deadline": now + dt.timedelta(days=1),
                    "created_at": now,
                    "kind": "call",
                    "task_id": "arq_" + tokens.token_urlsafe(24),
                    "binding_jti": tokens.token_urlsafe(18),
                    "approval_id": "apr_" + tokens.token_urlsafe(24) if approved else None,
                    "approved_until": now + dt.timedelta(days=30) if approved else None,
                    "call": {
                        "connector": connector.slug,
                        "action": "update_item",
                        "arguments_digest": digest,
                        "policy_version": version,
                    },
                }
            )
        for start in range(0, len(rows), 1000):
            session.execute(insert(AccessRequest), rows[start : start + 1000])


def needs_approver(database: Database) -> None:
    from sqlalchemy import update

    from provisioning.connectors.models import Action

    with database.transaction() as session:
        session.execute(
            update(Action).where(Action.name == "update_item").values(requires_approver=True)
        )


def approved_calls(database: Database, calls: Any) -> list[dict[str, Any]]:
    """Re-evaluations presenting an approved call's approval (with --approver), 200 of them;
    on a tree that signs approval states, the same 200 again presenting it with its
    ``state``."""
    try:
        from sqlalchemy import select

        from provisioning.connectors.models import Action, Connector
        from provisioning.requests.models import AccessRequest
    except ImportError:
        return []
    if not hasattr(Action, "requires_approver"):  # a tree without call-level approval
        return []
    with database.reader() as session:
        if not session.scalar(select(Action.id).where(Action.requires_approver.is_(True))):
            return []
        rows = session.execute(
            select(AccessRequest, Connector.slug)
            .join(Connector, Connector.id == AccessRequest.connector_id)
            .where(AccessRequest.approval_id.is_not(None))
            .limit(200)
        ).all()
        signing = calls is not None and hasattr(calls.signer(), "state")
        approvals = [({"id": row.approval_id}, row, slug) for row, slug in rows]
        if signing:
            approvals += [
                ({"id": row.approval_id, "state": calls.signer().state(row, calls.pdp)}, row, slug)
                for row, slug in rows
            ]
    return [
        {
            "subject": {"type": "user", "id": str(row.user_id)},
            "resource": {"type": "connector", "id": slug},
            "action": {"name": "update_item"},
            "context": {"interface": "web", "arguments": CALL_ARGUMENTS, "approval": approval},
        }
        for approval, row, slug in approvals
    ]


if __name__ == "__main__":
    raise SystemExit(main())
