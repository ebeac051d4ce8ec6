"""The audit chain: append-only in the database, and any tampering is detected by verify."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DatabaseError

from provisioning.audit import log as audit
from provisioning.audit.models import AuditChainHead, AuditEvent


def write_events(database, origin, count: int) -> None:
    with database.transaction() as session:
        audit.record(
            session,
            origin,
            [
                audit.Entry(
                    "grant.created",
                    "grant",
                    str(i),
                    reason=f"event {i}",
                    after={"connector": "github", "n": i, "note": "é✓"},
                )
                for i in range(count)
            ],
        )


@contextmanager
def tampering(database) -> Iterator:
    """A session of someone with DDL rights who switches the append-only guard off."""
    with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
            conn.execute(text("DROP TRIGGER audit_events_no_delete"))
    with database.transaction() as session:
        yield session
    if database.dialect == "postgresql":
        with database.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))


def verdict(database) -> audit.Verification:
    with database.reader() as session:
        return audit.verify(session)


def test_intact_chain_verifies(database, origin):
    write_events(database, origin, 5)
    write_events(database, origin, 3)
    result = verdict(database)
    assert result.intact, result.problem
    assert result.checked == 8


def test_empty_chain_verifies(database):
    assert verdict(database).intact


def test_events_are_chained_in_order(database, origin):
    write_events(database, origin, 3)
    with database.reader() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        head = session.get(AuditChainHead, 1)
    assert [e.id for e in events] == [1, 2, 3]
    assert events[0].prev_hash == "0" * 64
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert (head.last_event_id, head.last_hash) == (3, events[-1].hash)


@pytest.mark.parametrize("statement", ["update", "delete"])
def test_database_refuses_to_change_or_remove_events(database, origin, statement):
    write_events(database, origin, 2)
    query = (
        update(AuditEvent).values(actor="mallory")
        if statement == "update"
        else delete(AuditEvent).where(AuditEvent.id == 1)
    )
    with pytest.raises(DatabaseError, match="append-only"), database.transaction() as session:
        session.execute(query)
    assert verdict(database).intact


FIELDS = ["actor", "source", "action", "subject_id", "reason", "after", "occurred_at", "hash"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    size=st.integers(1, 8),
    victim=st.integers(0, 7),
    field=st.sampled_from(FIELDS),
)
def test_altering_any_field_of_any_event_is_detected(fresh_database, origin, size, victim, field):
    database = fresh_database()
    write_events(database, origin, size)
    victim = victim % size + 1
    with tampering(database) as session:
        event = session.get(AuditEvent, victim)
        if field == "after":
            event.after = {**event.after, "n": -1}
        elif field == "occurred_at":
            event.occurred_at = event.occurred_at.replace(year=2001)
        elif field == "hash":
            event.hash = "f" * 64
        else:
            setattr(event, field, "tampered")
    result = verdict(database)
    assert not result.intact
    # The altered event, or (for a rewritten hash) the one that should chain to it.
    assert result.broken_at in (victim, victim + 1)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(2, 8), victim=st.integers(0, 7))
def test_deleting_any_event_is_detected(fresh_database, origin, size, victim):
    database = fresh_database()
    write_events(database, origin, size)
    victim = victim % size + 1
    with tampering(database) as session:
        session.execute(delete(AuditEvent).where(AuditEvent.id == victim))
    result = verdict(database)
    assert not result.intact
    assert result.broken_at == (victim + 1 if victim < size else victim)


def test_deleting_and_rechaining_the_tail_is_detected_by_the_head(database, origin):
    write_events(database, origin, 4)
    with tampering(database) as session:
        session.execute(delete(AuditEvent).where(AuditEvent.id >= 3))
    result = verdict(database)
    assert result.broken_at == 3
    assert "cut off" in result.problem


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(2, 8), first=st.integers(0, 7), second=st.integers(0, 7))
def test_reordering_events_is_detected(fresh_database, origin, size, first, second):
    first, second = first % size + 1, second % size + 1
    if first == second:
        second = first % size + 1
    database = fresh_database()
    write_events(database, origin, size)
    with tampering(database) as session:
        # Swap the two events' positions: each keeps its content under the other's id.
        a, b = session.get(AuditEvent, first), session.get(AuditEvent, second)
        swapped = ("subject_id", "reason", "after", "prev_hash", "hash")
        values_a = {f: getattr(a, f) for f in swapped}
        for f in swapped:
            setattr(a, f, getattr(b, f))
            setattr(b, f, values_a[f])
    result = verdict(database)
    assert not result.intact
    assert result.broken_at == min(first, second)


def test_record_with_no_entries_writes_nothing(database, origin):
    with database.transaction() as session:
        assert audit.record(session, origin, []) == []
    assert verdict(database).checked == 0


def test_export_writes_every_event_as_a_json_line(database, origin, tmp_path):
    import json

    write_events(database, origin, 3)
    out = tmp_path / "audit.jsonl"
    with database.reader() as session, out.open("w") as handle:
        assert audit.export(session, handle) == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == [1, 2, 3]
    assert lines[0]["after"]["note"] == "é✓"
    # The exported line carries everything needed to re-check the chain offline.
    assert audit.chain_hash(lines[0]["prev_hash"], {**lines[0], "occurred_at": _parse(lines[0])})
    assert all(
        audit.chain_hash(line["prev_hash"], {**line, "occurred_at": _parse(line)}) == line["hash"]
        for line in lines
    )


def _parse(line):
    import datetime as dt

    return dt.datetime.fromisoformat(line["occurred_at"])


_TEXT = st.text(max_size=12).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
    | st.uuids()
    | st.datetimes()
    | st.sampled_from(list(audit.Source)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(_TEXT, inner, max_size=3)
        | st.dictionaries(st.integers(-3, 12) | st.booleans() | st.none(), inner, max_size=3)
    ),
    max_leaves=8,
)


def entry_of(text: st.SearchStrategy, value: st.SearchStrategy) -> st.SearchStrategy:
    document = st.none() | st.dictionaries(text | st.integers(0, 12), value, max_size=4)
    return st.builds(
        audit.Entry,
        action=text,
        subject_type=text,
        subject_id=text,
        user_id=st.none() | st.uuids(),
        reason=st.none() | text,
        before=document,
        after=document,
    )


_ENTRY = entry_of(_TEXT, _VALUE)
# What both databases keep as given: no NUL in PostgreSQL's text, and jsonb's numbers
# written back as numeric text (1e16 comes back an int, -0.0 as 0), so integers only.
_KEPT_TEXT = _TEXT.filter(lambda s: "\x00" not in s)
_KEPT = entry_of(
    _KEPT_TEXT,
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _KEPT_TEXT | st.uuids(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEPT_TEXT, inner, max_size=3),
        max_leaves=8,
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(_ENTRY, min_size=1, max_size=4),
    actor=_TEXT,
    origin_reason=st.none() | _TEXT,
    request_id=st.none() | _TEXT,
    first_id=st.integers(1, 2**40),
)
def test_an_events_encoding_is_the_canonical_encoding_of_its_fields(
    entries, actor, origin_reason, request_id, first_id
):
    """record() assembles each event's canonical encoding from parts; it is exactly the one
    verify() hashes (canonical over the event's hashed fields), for any event."""
    import datetime as dt

    shared = {
        "occurred_at": dt.datetime(2026, 12, 5, 20, 1, 2, 345678, tzinfo=dt.UTC),
        "actor": actor,
        "source": str(audit.Source.OKTA_SYNC),
        "request_id": request_id,
    }
    made = list(audit._encodings(shared, origin_reason, entries, first_id))
    for event_id, entry, (encoding, reason, before, after) in zip(
        range(first_id, first_id + len(entries)), entries, made, strict=True
    ):
        row = {
            **shared,
            "id": event_id,
            "action": entry.action,
            "subject_type": entry.subject_type,
            "subject_id": entry.subject_id,
            "user_id": entry.user_id,
            "reason": reason,
            "before": audit._plain(entry.before),
            "after": audit._plain(entry.after),
        }
        assert encoding.encode() == audit.canonical(audit._hashed_fields(row))
        assert json.loads(before) == row["before"] and json.loads(after) == row["after"]


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=st.lists(_KEPT, min_size=1, max_size=6), reason=st.none() | _KEPT_TEXT)
def test_any_events_recorded_verify_and_read_back_as_recorded(fresh_database, entries, reason):
    database = fresh_database()
    origin = audit.Origin("admin@example.com", audit.Source.ADMIN, reason)
    with database.transaction() as session:
        ids = audit.record(session, origin, entries[:1])  # one event, then many
        ids += audit.record(session, origin, entries[1:])
    assert ids == list(range(1, len(entries) + 1))
    assert verdict(database).intact and verdict(database).checked == len(entries)
    with database.reader() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    for event, entry in zip(events, entries, strict=True):
        assert (event.action, event.subject_id, event.user_id) == (
            entry.action,
            entry.subject_id,
            entry.user_id,
        )
        assert event.before == audit._plain(entry.before)
        assert event.after == audit._plain(entry.after)
