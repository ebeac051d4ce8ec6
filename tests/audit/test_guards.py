"""The database's guards on the chain: no TRUNCATE, and a head that only advances with the chain."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from provisioning.audit import log as audit
from provisioning.audit.models import GENESIS_HASH, AuditChainHead, AuditEvent
from tests.audit.dba import bypassing_triggers, cut
from tests.audit.test_log import verdict, write_events
from tests.conftest import ON_POSTGRES


def head(database) -> tuple[int, str]:
    with database.reader() as session:
        row = session.get(AuditChainHead, 1)
        return row.last_event_id, row.last_hash


def hashes(database) -> dict[int, str]:
    with database.reader() as session:
        return dict(session.execute(select(AuditEvent.id, AuditEvent.hash)).all())


@pytest.mark.skipif(not ON_POSTGRES, reason="TRUNCATE is PostgreSQL's (SQLite's DELETE fires)")
@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE audit_events",
        "TRUNCATE audit_chain_head",
        "TRUNCATE audit_events, audit_chain_head RESTART IDENTITY CASCADE",
    ],
)
def test_postgresql_refuses_to_truncate_the_audit_tables(database, origin, statement):
    write_events(database, origin, 3)
    before = hashes(database), head(database)
    with pytest.raises(DatabaseError, match="append-only"), database.transaction() as session:
        session.execute(text(statement))
    assert (hashes(database), head(database)) == before
    assert verdict(database).intact


def test_deleting_every_event_is_refused(database, origin):
    write_events(database, origin, 3)
    with pytest.raises(DatabaseError, match="append-only"), database.transaction() as session:
        session.execute(text("DELETE FROM audit_events"))
    assert len(hashes(database)) == 3


def test_the_head_row_cannot_be_deleted(database, origin):
    write_events(database, origin, 2)
    with pytest.raises(DatabaseError, match="chain head"), database.transaction() as session:
        session.execute(text("DELETE FROM audit_chain_head"))
    assert head(database)[0] == 2


@pytest.fixture
def chain(database, origin):
    write_events(database, origin, 4)
    write_events(database, origin, 2)
    return database


# Where someone might point the head: an earlier event, the genesis, the last event
# with another hash, an event that does not exist, another row.
moves = st.one_of(
    st.tuples(st.integers(0, 5), st.just("earlier")),
    st.tuples(st.just(6), st.sampled_from(["other-hash", "genesis"])),
    st.tuples(st.integers(7, 2**40), st.sampled_from(["last-hash", "other-hash"])),
    st.tuples(st.just(6), st.just("other-row")),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(move=moves)
def test_the_head_cannot_be_moved_off_the_last_event(chain, move):
    database = chain
    known = hashes(database)
    before = head(database)
    event_id, how = move
    values = {"id": 1, "last_event_id": event_id}
    if how == "earlier":
        values["last_hash"] = known.get(event_id, GENESIS_HASH)
    elif how == "other-hash":
        values["last_hash"] = "f" * 64
    elif how == "genesis":
        values["last_hash"] = GENESIS_HASH
    elif how == "last-hash":
        values["last_hash"] = known[6]
    else:
        values.update(id=2, last_hash=known[6])
    with pytest.raises(DatabaseError, match="chain head"), database.transaction() as session:
        session.execute(
            text(
                "UPDATE audit_chain_head SET id = :id, last_event_id = :last_event_id, "
                "last_hash = :last_hash"
            ),
            values,
        )
    assert head(database) == before
    assert verdict(database).intact


def test_writers_advance_the_head_event_by_event_and_in_batches(database, origin):
    for size in (1, 3, 1, 2500):
        write_events(database, origin, size)
    assert head(database) == (2505, hashes(database)[2505])
    assert verdict(database).checked == 2505


def test_an_event_appended_behind_the_writers_back_stops_the_next_write(database, origin):
    """The head must name the last event: a row slipped in past it makes the next
    writer's advance fail, rather than chain over it."""
    write_events(database, origin, 2)
    with database.transaction() as session:
        session.execute(
            text(
                "INSERT INTO audit_events (id, occurred_at, actor, source, action, subject_type, "
                "subject_id, prev_hash, hash) VALUES (9, '2026-01-01 00:00:00', 'mallory', "
                "'cli', 'grant.created', 'grant', '1', :h, :h)"
            ),
            {"h": "e" * 64},
        )
    with pytest.raises(DatabaseError, match="chain head"):
        write_events(database, origin, 1)
    assert head(database)[0] == 2


def test_a_dba_can_still_cut_the_tail_and_the_walk_alone_cannot_tell(database, origin):
    """What the triggers cannot stop: someone who can bypass them. Only a checkpoint
    held elsewhere shows this (tests/audit/test_checkpoints.py)."""
    write_events(database, origin, 5)
    with bypassing_triggers(database) as conn:
        cut(conn, after=3)
    result = verdict(database)
    assert result.intact and result.checked == 3
    # ... and the guards are back afterwards.
    with pytest.raises(DatabaseError, match="chain head"), database.transaction() as session:
        session.execute(text("UPDATE audit_chain_head SET last_event_id = 0"))
    with database.transaction() as session:
        assert audit.record(session, origin, [audit.Entry("x", "y", "z")]) == [4]
