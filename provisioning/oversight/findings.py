"""Opening, refreshing, resolving and suppressing findings.

A scan states the complete set of subjects that have a problem of some
kinds right now (:func:`observe`): a subject not yet flagged gets an open
finding, one already flagged (open or suppressed) has its ``last_seen`` and
evidence refreshed, and an open finding whose subject is no longer in the
set is resolved automatically. So there is at most one current finding per
kind and subject (a partial unique index holds the database to it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.database import utcnow
from provisioning.oversight.models import Finding, FindingKind, FindingState, Severity


@dataclass(frozen=True)
class Observation:
    kind: FindingKind
    severity: Severity
    subject_type: str
    subject_id: str
    evidence: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str]:
        return (str(self.kind), self.subject_type, self.subject_id)


def observe(
    session: Session, kinds: Iterable[FindingKind], observations: Iterable[Observation]
) -> dict[str, int]:
    """Make the current findings of ``kinds`` exactly the ``observations``; return counts.

    Set-based: one read of the current findings, then batched inserts and updates.
    """
    kinds = [FindingKind(k) for k in kinds]
    now = utcnow()
    seen = {o.key: o for o in observations}
    current = {
        (str(kind), subject_type, subject_id): (finding_id, state)
        for finding_id, kind, subject_type, subject_id, state in session.execute(
            select(
                Finding.id, Finding.kind, Finding.subject_type, Finding.subject_id, Finding.state
            ).where(Finding.kind.in_(kinds), Finding.state != FindingState.RESOLVED)
        )
    }
    opened = [
        {
            "kind": o.kind,
            "severity": o.severity,
            "subject_type": o.subject_type,
            "subject_id": o.subject_id,
            "evidence": o.evidence,
            "state": FindingState.OPEN,
            "first_seen": now,
            "last_seen": now,
        }
        for key, o in seen.items()
        if key not in current
    ]
    for rows in _chunks(opened):
        session.execute(insert(Finding), rows)
    still = [finding_id for key, (finding_id, _) in current.items() if key in seen]
    gone = [
        finding_id
        for key, (finding_id, state) in current.items()
        if key not in seen and state == FindingState.OPEN
    ]
    for ids in _chunks(still):
        session.execute(update(Finding).where(Finding.id.in_(ids)).values(last_seen=now))
    for ids in _chunks(gone):
        session.execute(
            update(Finding)
            .where(Finding.id.in_(ids))
            .values(state=FindingState.RESOLVED, resolved_at=now, decision_reason="cause gone")
        )
    return {"opened": len(opened), "still_open": len(still), "resolved": len(gone)}


def _chunks(items: list, size: int = 1000) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def decide(
    session: Session, origin: Origin, finding: Finding, state: FindingState, reason: str
) -> Finding:
    """Resolve or suppress a finding by hand, with who and why, audited."""
    if not reason or not reason.strip():
        raise ValueError("a reason is required")
    before = str(finding.state)
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
