"""Tables for findings (one open per kind and subject) and job runs."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, ColumnElement, Index, String, Text, case, func, select
from sqlalchemy.orm import Mapped, column_property, mapped_column

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
    PARKED_OKTA_EVENT = "parked_okta_event"  # an Okta event that could not be applied
    # someone holds what a separation-of-duties rule forbids, without a live exemption
    SEPARATION_VIOLATION = "separation_violation"


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class FindingState(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    SUPPRESSED = "suppressed"


class FindingScan(Base):
    """When findings of one kind (and subject type) were last observed, completely.

    :func:`provisioning.oversight.findings.observe` states every subject that
    has the problem right now and resolves the open findings it does not name,
    so an open finding of that kind was seen by that observation: its
    ``last_seen`` is this time, kept here once rather than rewritten on every
    open finding at every scan.
    """

    __tablename__ = "finding_scans"

    # A plain string, not a second CHECK constraint to keep in step with the kinds.
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    scanned_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


def _last_seen(state: Any, kind: Any, subject_type: Any, recorded: Any) -> ColumnElement[Any]:
    """SQL: an open finding's last sighting, the later of its row's and its kind's last scan."""
    scanned = (
        select(FindingScan.scanned_at)
        .where(
            FindingScan.kind == kind,
            FindingScan.subject_type == subject_type,
            FindingScan.scanned_at > recorded,
        )
        .correlate_except(FindingScan)
        .scalar_subquery()
    )
    return case((state == FindingState.OPEN, func.coalesce(scanned, recorded)), else_=recorded)


class Finding(Base):
    """Something a job flagged, open until its cause is gone (or someone suppresses it).

    ``last_seen`` is when a scan last saw its cause. The row's ``last_seen``
    column (``recorded_last_seen``) holds it for suppressed and resolved
    findings. An open finding was seen by every observation of its kind since
    it was opened (or that observation would have resolved it), so its
    ``last_seen`` is the latest one (:class:`FindingScan`), not written to
    every open row at every scan.
    """

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    kind: Mapped[FindingKind] = mapped_column(enum_type(FindingKind))
    severity: Mapped[Severity] = mapped_column(enum_type(Severity))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(255))
    evidence: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[FindingState] = mapped_column(enum_type(FindingState))
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    recorded_last_seen: Mapped[dt.datetime] = mapped_column(
        "last_seen", UTCDateTime, default=utcnow
    )
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

    # Read-only, in Python and in SQL alike (see the class docstring).
    last_seen: Mapped[dt.datetime] = column_property(
        _last_seen(state, kind, subject_type, recorded_last_seen)
    )
