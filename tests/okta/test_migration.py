"""Migration 0011 repairs what a far-future ``published`` time already pinned."""

from __future__ import annotations

import datetime as dt
import uuid

from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from provisioning.database import utcnow
from provisioning.identity.models import User
from provisioning.okta.models import SeenEvent

REVISION = "0011"


def test_fact_times_in_the_future_are_brought_back_to_now(databases):
    database = databases.empty()
    scripts = ScriptDirectory.from_config(database._alembic())
    database.upgrade(scripts.get_revision(REVISION).down_revision)
    pinned = "2999-01-01 00:00:00"
    user_id = uuid.uuid4()
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, user_name, user_name_key, active, status_published_at, "
                "created_at, updated_at, version) VALUES (:id, 'ada', 'ada', false, :pinned, "
                ":now, :now, 1)"
            ),
            {"id": user_id.hex, "pinned": pinned, "now": "2026-12-01 00:00:00"},
        )
        conn.execute(
            text(
                "INSERT INTO okta_events (uuid, event_type, published, subject, source, "
                "outcome, seen_at) VALUES ('e1', 'user.lifecycle.activate', :pinned, '00u1', "
                "'okta-hook', 'applied', :pinned)"
            ),
            {"pinned": pinned},
        )
    before = utcnow()
    database.upgrade()
    with database.reader() as session:
        user = session.get(User, user_id)
        assert before - dt.timedelta(seconds=1) <= user.status_published_at <= utcnow()
        seen = session.scalar(select(SeenEvent))
        assert seen.published.year == 2999 and seen.clamped
        assert before - dt.timedelta(seconds=1) <= seen.ordered_at <= utcnow()
    database.dispose()
