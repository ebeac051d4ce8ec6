"""Tables for findings (one open per kind and subject) and job runs."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.database import Base, utcnow
from provisioning.types import SerialId, UTCDateTime, enum_type


class FindingKind(enum.StrEnum):
    DORMANT_GRANT = "dormant_grant"
    INACTIVE_HOLDER = "inactive_holder"  # access held by an inactive or offboarded user
    ORPHANED_USER = "orphaned_user"  # not seen in the IdP by the last reconciliation
    UNJUSTIFIED_GRANT = "unjustified_grant"
    REASSESSMENT_OVERDUE = "reassessment_overdue"
    UNREVIEWED_THIRD_PARTY = "unreviewed_third_party"
    UNASSESSED_REGULATED = "unassessed_regulated"
    DEAD_LETTERS = "dead_letters"  # messages a downstream target never acknowledged


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class FindingState(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    SUPPRESSED = "suppressed"


class Finding(Base):
    """Something a job flagged, open until its cause is gone (or someone suppresses it)."""

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    kind: Mapped[FindingKind] = mapped_column(enum_type(FindingKind))
    severity: Mapped[Severity] = mapped_column(enum_type(Severity))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(255))
    evidence: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[FindingState] = mapped_column(enum_type(FindingState))
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Who suppressed or resolved it by hand, and why.
    decided_by: Mapped[str | None] = mapped_column(String(255))
    decision_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # One finding per kind and subject that is not resolved (open or suppressed).
        Index(
            "uq_findings_current",
            "kind",
            "subject_type",
            "subject_id",
            unique=True,
            sqlite_where=state != FindingState.RESOLVED,
            postgresql_where=state != FindingState.RESOLVED,
        ),
        Index("ix_findings_state_kind", "state", "kind"),
    )


class JobOutcome(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobRun(Base):
    """One run of a job: what, why (schedule, catch-up, by hand), when, and with what result."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[JobOutcome] = mapped_column(enum_type(JobOutcome))
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_job_runs_job_started", "job", "started_at"),)
