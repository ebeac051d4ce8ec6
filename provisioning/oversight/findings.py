"""Opening, refreshing, resolving and suppressing findings.

A scan states the complete set of subjects that have a problem of one kind
right now (:func:`observe`): a subject not yet flagged gets an open finding,
one already flagged stays so (open, or suppressed), and an open finding whose
subject is no longer in the set is resolved automatically. So there is at
most one current finding per kind and subject (a partial unique index holds
the database to it). The time of the observation is recorded once per kind:
it is the ``last_seen`` of every finding of that kind still open.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    MetaData,
    Select,
    String,
    Table,
    and_,
    case,
    exists,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.database import UTCDateTime, chunked, utcnow
from provisioning.oversight.models import (
    Finding,
    FindingKind,
    FindingScan,
    FindingState,
    Severity,
)


def _scratch(session: Session) -> Table:
    """A temporary table of (subject_id, evidence) for one kind, private to this transaction."""
    table = Table(
        f"scan_subjects_{uuid.uuid4().hex[:8]}",
        MetaData(),
        Column("subject_id", String(255), primary_key=True),
        Column("evidence", JSON),
        prefixes=["TEMPORARY"],
    )
    table.create(session.connection())
    return table


def observe(
    session: Session,
    kind: FindingKind,
    severity: Severity,
    subject_type: str,
    subjects: Select | tuple[Select, ...] | list[tuple[str, dict[str, Any]]],
) -> dict[str, int]:
    """Make the current findings of ``kind`` exactly ``subjects``; return counts.

    ``subjects`` is a query of (subject_id, evidence) columns (or several, whose subjects
    differ), or those pairs.
    Set-based whatever the size: the subjects go to a temporary table, then
    one statement each resolves the open findings whose cause is gone, opens
    the new ones and refreshes ``last_seen`` of suppressed ones still seen.
    Open findings still seen are not written at all: the time of this
    observation, recorded once for the kind (:class:`FindingScan`), is their
    ``last_seen``.
    """
    now = utcnow()
    mine = and_(Finding.kind == kind, Finding.subject_type == subject_type)
    previous = session.scalar(
        select(FindingScan.scanned_at).where(
            FindingScan.kind == str(kind), FindingScan.subject_type == subject_type
        )
    )
    scratch = _scratch(session)
    try:
        if isinstance(subjects, list):
            for rows in chunked([{"subject_id": s, "evidence": e} for s, e in subjects]):
                session.execute(insert(scratch), rows)
            seen = len(subjects)
        else:
            seen = 0
            # Several queries (a tuple) are inserted one by one: each planned on its own,
            # small (PostgreSQL JIT-compiled one 50-part UNION for seconds).
            for query in subjects if isinstance(subjects, tuple) else (subjects,):
                seen += session.execute(
                    insert(scratch)
                    .from_select(["subject_id", "evidence"], query)
                    .execution_options(preserve_rowcount=True)
                ).rowcount
        present = exists().where(scratch.c.subject_id == Finding.subject_id)
        # Last seen by the previous observation of the kind, which saw every open finding.
        last_seen = Finding.recorded_last_seen
        if previous is not None:
            before = literal(previous, UTCDateTime())
            last_seen = case((last_seen < before, before), else_=last_seen)
        resolved = session.execute(
            update(Finding)
            .where(mine, Finding.state == FindingState.OPEN, ~present)
            .values(
                state=FindingState.RESOLVED,
                resolved_at=now,
                decision_reason="cause gone",
                recorded_last_seen=last_seen,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        session.execute(
            update(Finding)
            .where(mine, Finding.state == FindingState.SUPPRESSED, present)
            .values(recorded_last_seen=now)
            .execution_options(synchronize_session=False)
        )
        findings = Finding.__table__
        # A subject with a current finding (open or suppressed) is skipped by the
        # partial unique index itself: an anti-join here is what a planner without
        # statistics (a fresh PostgreSQL table) turns into a nested loop over 1M rows.
        opened = session.execute(
            _insert(session, findings)
            .from_select(
                [
                    "kind",
                    "severity",
                    "subject_type",
                    "subject_id",
                    "evidence",
                    "state",
                    "first_seen",
                    "last_seen",
                ],
                select(
                    literal(str(kind)),
                    literal(str(severity)),
                    literal(subject_type),
                    scratch.c.subject_id,
                    scratch.c.evidence,
                    literal(str(FindingState.OPEN)),
                    literal(now, UTCDateTime()),
                    literal(now, UTCDateTime()),
                )
                # SQLite reads "SELECT ... ON CONFLICT" as a join without a WHERE here.
                .where(literal(True)),
            )
            .on_conflict_do_nothing(
                index_elements=["kind", "subject_type", "subject_id"],
                index_where=findings.c.state != str(FindingState.RESOLVED),
            )
            # Without it, psycopg's rowcount of INSERT ... SELECT is not kept (-1).
            .execution_options(preserve_rowcount=True)
        ).rowcount
    finally:
        scratch.drop(session.connection())
    _scanned(session, kind, subject_type, now)
    # Every subject seen had a current finding (open or suppressed) or has a new one.
    return {"opened": opened, "still_open": seen - opened, "resolved": resolved}


def current(
    session: Session, kind: FindingKind, subject_type: str, subjects: list[str]
) -> dict[str, FindingState]:
    """The state of each of ``subjects``' current finding of ``kind`` (open or suppressed;
    a subject without one is absent)."""
    found: dict[str, FindingState] = {}
    for chunk in chunked(subjects):
        rows = session.execute(
            select(Finding.subject_id, Finding.state).where(
                Finding.kind == kind,
                Finding.subject_type == subject_type,
                Finding.state != FindingState.RESOLVED,
                Finding.subject_id.in_(chunk),
            )
        )
        found.update((subject, FindingState(state)) for subject, state in rows)
    return found


def note(
    session: Session,
    kind: FindingKind,
    severity: Severity,
    subject_type: str,
    *,
    opened: list[tuple[str, dict[str, Any]]],
    gone: list[str],
) -> None:
    """A partial observation of ``kind``, by a change that knows about a few subjects only
    (unlike :func:`observe`, it leaves every other finding as it is): open a finding for
    each subject of ``opened`` without a current one, resolve the open ones of ``gone``."""
    now = utcnow()
    if opened:
        findings = Finding.__table__
        for chunk in chunked(opened):
            session.execute(
                _insert(session, findings)
                .values(
                    [
                        {
                            "kind": str(kind),
                            "severity": str(severity),
                            "subject_type": subject_type,
                            "subject_id": subject,
                            "evidence": evidence,
                            "state": str(FindingState.OPEN),
                            "first_seen": now,
                            "last_seen": now,
                        }
                        for subject, evidence in chunk
                    ]
                )
                .on_conflict_do_nothing(
                    index_elements=["kind", "subject_type", "subject_id"],
                    index_where=findings.c.state != str(FindingState.RESOLVED),
                )
            )
    for chunk in chunked(gone):
        session.execute(
            update(Finding)
            .where(
                Finding.kind == kind,
                Finding.subject_type == subject_type,
                Finding.state == FindingState.OPEN,
                Finding.subject_id.in_(chunk),
            )
            .values(
                state=FindingState.RESOLVED,
                resolved_at=now,
                decision_reason="cause gone",
                recorded_last_seen=Finding.last_seen,
            )
            .execution_options(synchronize_session=False)
        )


def _insert(session: Session, table: Any) -> Any:
    """An INSERT with the dialect's ``ON CONFLICT`` clauses (both databases have them)."""
    dialect = session.bind.dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _scanned(session: Session, kind: FindingKind, subject_type: str, at: dt.datetime) -> None:
    """Record ``at`` as the latest observation of ``kind`` (an upsert, on either database)."""
    upsert = _insert(session, FindingScan).values(
        kind=str(kind), subject_type=subject_type, scanned_at=at
    )
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=["kind", "subject_type"], set_={"scanned_at": at}
        )
    )


def decide(
    session: Session, origin: Origin, finding: Finding, state: FindingState, reason: str
) -> Finding:
    """Resolve or suppress a finding by hand, with who and why, audited."""
    if not reason or not reason.strip():
        raise ValueError("a reason is required")
    before = str(finding.state)
    # Its last sighting, until now that of the latest scan of its kind, is kept in the row.
    finding.recorded_last_seen = finding.last_seen
    finding.state = FindingState(state)
    finding.decided_by, finding.decision_reason = origin.actor, reason.strip()
    if finding.state == FindingState.RESOLVED:
        finding.resolved_at = utcnow()
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                f"finding.{finding.state}",
                "finding",
                str(finding.id),
                reason=finding.decision_reason,
                before={"state": before},
                after={"state": str(finding.state), "kind": str(finding.kind)},
            )
        ],
    )
    return finding
