"""Benchmark: opening access review campaigns at 100k users and 1M grants, and closing one.

The organisation of bench/okta_hooks.py (100,000 users, 2,000 groups, 200
connectors, 1,000,000 grants, each justified by a mapping), with managers
planted: a third of the users name their manager by our id (as SCIM sends
it), a third by Okta id (externalId, as Okta's profile does), a third name
nobody we know; half the connectors have an owner. Timed, each one
``database.transaction()`` with its commit:

1. a campaign over 20 connectors (100,000 grants), the spec's size;
2. a campaign over every connector (1,000,000 grants), the design size;
3. a role-change campaign over one person's grants (10);
4. closing campaign 1 with 10% of its items revoked by their reviewers
   (decisions written by SQL beforehand) and the rest kept: review
   revocations, the engine for the users concerned, audit events.

    .venv/bin/python bench/review_campaign.py [--users 100000] [--databases sqlite,postgresql]
                                              [--analyze]

PostgreSQL's statistics are gathered after seeding (as autovacuum would);
SQLite's only with ``--analyze``: the service never runs ANALYZE on SQLite,
and without statistics its planner reads the justifications of a scoped
campaign from the users' side (all memberships) rather than from the
connectors' mappings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

from sqlalchemy import bindparam, func, select, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import DEFAULT_POSTGRES, database_for
from bench.okta_hooks import seed
from provisioning.audit.log import Origin, Source
from provisioning.connectors.models import Connector
from provisioning.database import Database, utcnow
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
from provisioning.reviews import campaigns
from provisioning.reviews.models import (
    CampaignTrigger,
    NoResponse,
    ReviewDecision,
    ReviewItem,
)

ORIGIN = Origin(actor="bench", source=Source.ADMIN)


def plant_managers(database: Database, data: dict, analyze: bool = False) -> None:
    """Managers for two thirds of the users (by id or by Okta id); owners for half the
    connectors."""
    ids = data["user_ids"]
    rows = []
    for n, user_id in enumerate(ids):
        boss = (n // 10) * 10  # every tenth user manages the next nine
        if boss == n or n % 3 == 2:
            manager = f"unknown-{n}"
        elif n % 3 == 0:
            manager = str(ids[boss])
        else:
            manager = f"00u{boss}"
        rows.append({"uid": user_id, "mid": manager})
    statement = (
        update(User.__table__)
        .where(User.__table__.c.id == bindparam("uid"))
        .values(manager_id=bindparam("mid"))
    )
    with database.engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(statement, rows[start : start + 10_000])
        conn.execute(
            update(Connector)
            .where(Connector.id % 2 == 0)
            .values(owner=Connector.slug + "-owner@example.com")
        )
        if database.dialect == "postgresql" or analyze:
            conn.exec_driver_sql("ANALYZE")


def timed(database: Database, work) -> tuple[float, object]:
    started = time.perf_counter()
    with database.transaction() as session:
        result = work(session)
    return time.perf_counter() - started, result


def open_campaign(connector_ids=None, subject=None):
    def work(session):
        campaign = campaigns.create_campaign(
            session,
            ORIGIN,
            name="bench",
            trigger=CampaignTrigger.ROLE_CHANGE if subject else CampaignTrigger.MANUAL,
            deadline=utcnow() + dt.timedelta(days=14),
            no_response=NoResponse.KEEP,
            connector_ids=connector_ids,
            subject_user_id=subject,
        )
        return campaign.id, campaign.counts["items"]

    return work


def close(session, campaign_id):
    return campaigns.close_campaign(session, ORIGIN, campaign_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--analyze", action="store_true", help="ANALYZE SQLite after seeding")
    args = parser.parse_args()
    rows = []
    for kind in args.databases.split(","):
        with database_for(kind, args.postgres) as database:
            started = time.perf_counter()
            data = seed(database, args.users, 2000, 200, 10)
            plant_managers(database, data, args.analyze)
            print(f"{kind}: seeded in {time.perf_counter() - started:.0f} s", flush=True)
            with database.reader() as session:
                grants = session.scalar(select(func.count(Grant.id)))
                some = list(session.scalars(select(Connector.id).order_by(Connector.id).limit(20)))

            scoped_s, (scoped_id, scoped_items) = timed(database, open_campaign(some))
            print(f"{kind}: 20 connectors, {scoped_items:,} items: {scoped_s:.2f} s", flush=True)
            all_s, (_, all_items) = timed(database, open_campaign())
            print(f"{kind}: every connector, {all_items:,} items: {all_s:.2f} s", flush=True)
            one_s, (_, one_items) = timed(database, open_campaign(subject=data["user_ids"][4]))
            print(f"{kind}: one person, {one_items} items: {one_s * 1000:.0f} ms", flush=True)

            with database.transaction() as session:
                session.execute(
                    update(ReviewItem)
                    .where(ReviewItem.campaign_id == scoped_id, ReviewItem.id % 10 == 0)
                    .values(
                        decision=ReviewDecision.REVOKE,
                        decided_by="bench",
                        decided_at=utcnow(),
                        comment="bench",
                    )
                )
            close_s, campaign = timed(database, partial(close, campaign_id=scoped_id))
            counts = campaign.counts
            with database.reader() as session:
                reviewers = dict(
                    session.execute(
                        select(ReviewItem.reviewer_role, func.count(ReviewItem.id))
                        .where(ReviewItem.campaign_id == scoped_id)
                        .group_by(ReviewItem.reviewer_role)
                    ).all()
                )
            print(f"{kind}: closed in {close_s:.2f} s: {counts}; reviewers {reviewers}", flush=True)
            rows.append(
                (
                    kind + (" (ANALYZE)" if args.analyze and kind == "sqlite" else ""),
                    grants,
                    scoped_items,
                    scoped_s,
                    all_items,
                    all_s,
                    one_s,
                    close_s,
                    counts,
                )
            )
    print()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    print(
        "| database | grants | 20 connectors: items | s | items/s | every connector: items | s "
        "| one person ms | close (10% revoked) s | grants revoked |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, grants, scoped, scoped_s, every, all_s, one_s, close_s, counts in rows:
        print(
            f"| {kind} | {grants:,} | {scoped:,} | {scoped_s:.2f} | {scoped / scoped_s:,.0f} "
            f"| {every:,} | {all_s:.1f} | {one_s * 1000:.0f} | {close_s:.2f} "
            f"| {counts['grants_revoked']:,} |"
        )


if __name__ == "__main__":
    main()
