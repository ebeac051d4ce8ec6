"""Migration 0013 backfills the folded keys, and never fails on users whose names fold alike."""

from __future__ import annotations

import uuid

from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from provisioning.identity.models import Group, User

REVISION = "0013"
INSERT_USER = (
    "INSERT INTO users (id, user_name, user_name_key, display_name, email, given_name, "
    "deleted_at, active, created_at, updated_at, version) VALUES (:id, :name, :key, "
    ":display, :email, :given, :deleted, true, :created, :created, 1)"
)


def test_keys_are_folded_and_a_later_clash_is_set_aside(databases):
    database = databases.empty()
    scripts = ScriptDirectory.from_config(database._alembic())
    database.upgrade(scripts.get_revision(REVISION).down_revision)
    ids = {name: uuid.uuid4() for name in ("older", "later", "gone", "doctor")}
    users = [
        ("older", "Straße", None, "2026-01-01 00:00:00"),
        ("later", "STRASSE", None, "2026-02-01 00:00:00"),
        ("gone", "strasse", "2026-03-01 00:00:00", "2025-01-01 00:00:00"),
        ("doctor", "dr@example.com", None, "2026-01-01 00:00:00"),
    ]
    with database.engine.begin() as conn:
        for key, name, deleted, created in users:
            conn.execute(
                text(INSERT_USER),
                {
                    "id": ids[key].hex if database.dialect == "sqlite" else ids[key],
                    "name": name,
                    "key": name.lower(),
                    "display": "ÄRZTE Σ" if key == "doctor" else None,
                    "email": "Dr@EXAMPLE.com" if key == "doctor" else None,
                    "given": "Jörg" if key == "doctor" else None,
                    "deleted": deleted,
                    "created": created,
                },
            )
        conn.execute(
            text(
                "INSERT INTO groups (id, display_name, created_at, updated_at, version) "
                "VALUES (:id, 'ÄRZTE', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 1)"
            ),
            {"id": uuid.uuid4().hex if database.dialect == "sqlite" else uuid.uuid4()},
        )
    database.upgrade()
    with database.reader() as session:
        keys = {u.id: u for u in session.scalars(select(User))}
        assert keys[ids["older"]].user_name_key == "strasse"
        assert keys[ids["later"]].user_name_key == f"strasse#duplicate-{ids['later'].hex}"
        assert keys[ids["gone"]].user_name_key == "strasse"  # deleted: no clash
        doctor = keys[ids["doctor"]]
        assert (doctor.display_name_key, doctor.email_key, doctor.given_name_key) == (
            "ärzte \u03c3",
            "dr@example.com",
            "jörg",
        )
        assert session.scalar(select(Group.display_name_key)) == "ärzte"
    database.dispose()
