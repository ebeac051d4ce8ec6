"""Benchmark: SCIM filter queries (GET /scim/v2/Users?filter=...), median time per request.

Loads 20,000 users (non-ASCII display and given names, a title and two emails kept in
the JSON document) and 1,000 groups, then times each filter of :data:`FILTERS` through
the app's test client (the whole request: authentication, parsing, SQL, serialising),
ROUNDS times each, and prints the median and 90th percentile in milliseconds with the
number of resources found. Runs on the checked-out code, so the same script measures a
change before and after (see docs/performance.md, "SCIM filters and folded keys"):

    .venv/bin/python bench/scim_filters.py
    .venv/bin/python bench/scim_filters.py --database postgresql
    PYTHONPATH=/path/to/older/tree .venv/bin/python bench/scim_filters.py   # before
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import database_for
from sqlalchemy import insert

from provisioning.audit.log import Origin, Source
from provisioning.identity import directory
from provisioning.identity.models import Group, User
from provisioning.settings import load
from provisioning.tokens import credentials
from provisioning.web.app import create_app

USERS = 20_000
GROUPS = 1_000
ROUNDS = 40
FILTERS = [
    ("Users", 'userName eq "user012345@example.com"'),
    ("Users", 'displayName eq "ÄRZTE 12345"'),
    ("Users", 'displayName sw "ärzte 1234"'),
    ("Users", 'name.givenName eq "JÖRG12345"'),
    ("Users", 'title co "ngineer 1234"'),
    ("Users", 'emails.value eq "HOME12345@Example.com"'),
    ("Users", 'userName sw "user01234" and displayName co "ärzte"'),
    ("Groups", 'displayName eq "TEAM ÄRZTE 0042"'),
]


def load_rows(database) -> None:
    rows = []
    for n in range(USERS):
        new = directory.new_user(
            user_name=f"user{n:06d}@example.com",
            display_name=f"Ärzte {n:05d}",
            given_name=f"Jörg{n:05d}",
            email=f"work{n:05d}@example.com",
            scim_attributes={
                "title": f"Engineer {n:05d}",
                "emails": [
                    {"value": f"work{n:05d}@example.com", "type": "work", "primary": True},
                    {"value": f"home{n:05d}@example.com", "type": "home"},
                ],
            },
        )
        rows.append(new.values)
    with database.transaction() as session:
        for start in range(0, len(rows), 5_000):
            session.execute(insert(User), rows[start : start + 5_000])
        session.add_all(Group(display_name=f"Team Ärzte {n:04d}") for n in range(GROUPS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    with database_for(args.database) as database:
        load_rows(database)
        with database.transaction() as session:
            secret = credentials.create(
                session, "bench", ["scim:provision"], Origin("bench", Source.CLI)
            )
        client = create_app(load(database_url=database.url), database).test_client()
        headers = {"Authorization": f"Bearer {secret}"}
        print(f"{args.database}: {USERS} users, {GROUPS} groups, {args.rounds} rounds")
        print(f"{'filter':60} {'found':>5} {'p50 ms':>8} {'p90 ms':>8}")
        for resource, scim_filter in FILTERS:
            times, found = [], None
            for _ in range(args.rounds):
                started = time.perf_counter()
                response = client.get(
                    f"/scim/v2/{resource}",
                    query_string={"filter": scim_filter, "count": "100"},
                    headers=headers,
                )
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.get_json()
                found = response.get_json()["totalResults"]
            times.sort()
            p90 = times[int(len(times) * 0.9) - 1]
            label = f"{resource} {scim_filter}"
            print(f"{label:60} {found:>5} {statistics.median(times):>8.2f} {p90:>8.2f}")


if __name__ == "__main__":
    main()
