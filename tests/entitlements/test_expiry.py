"""Expiry: time-bound mappings and exceptions stop granting on time."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from provisioning.database import utcnow
from provisioning.entitlements.expiry import expire
from provisioning.entitlements.mappings import create_exception, create_mapping
from provisioning.entitlements.models import Grant, ManualException, Mapping
from tests.org import Org, later


def live(session) -> int:
    return len(session.scalars(select(Grant).where(Grant.revoked_at.is_(None))).all())


def test_expired_mapping_and_exception_are_revoked(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, sam, group = org.user(), org.user(), org.group()
        github, wiki = org.connector(), org.connector()
        org.join(ada, group)
        create_mapping(session, origin, group, github, "read", expires_at=later(1))
        create_exception(
            session, origin, sam, wiki, "read", justification="audit", expires_at=later(1)
        )
        assert live(session) == 2
        assert expire(session, origin) == {"users": 0, "revoked": 0, "updated": 0}
    past = utcnow() - dt.timedelta(minutes=1)
    with database.transaction() as session:
        session.execute(update(Mapping).values(expires_at=past))
        session.execute(update(ManualException).values(expires_at=past))
        counts = expire(session, origin)
        assert counts["revoked"] == 2 and live(session) == 0
        # Nothing left to do the next time.
        assert expire(session, origin)["users"] == 0
