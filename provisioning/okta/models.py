"""Tables for the Okta delivery inbox, the events already seen (dedupe and tombstones),
the events parked because they could not be applied, sync runs and import checkpoints."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.database import Base, utcnow
from provisioning.types import SerialId, UTCDateTime, enum_type


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # stored, not yet applied (or failed and waiting to retry)
    PROCESSED = "processed"
    REJECTED = "rejected"  # authenticated but malformed: kept for inspection, never applied


class EventOutcome(enum.StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # older than a fact already recorded
    IGNORED = "ignored"  # unknown type, or Okta's outcome was not SUCCESS
    PENDING = "pending"  # a denial about a user or group not known yet, kept until they appear
    PARKED = "parked"  # could not be applied: kept with its reason (ParkedEvent), a finding
    PREVIEW = "preview"  # a sample from Okta's console Preview (no target, no actor)


class InboxDelivery(Base):
    """One event hook delivery, committed before Okta gets its answer."""

    __tablename__ = "okta_inbox"

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    # Okta's delivery ``eventId``: a retried delivery carries the same one.
    delivery_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[DeliveryState] = mapped_column(enum_type(DeliveryState))
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # What applying it did: events by outcome, and how many were ordered at their receipt.
    outcomes: Mapped[dict] = mapped_column(JSON, default=dict, server_default="{}")

    __table_args__ = (Index("ix_okta_inbox_state", "state", "id"),)


class SeenEvent(Base):
    """An Okta System Log event already taken (by uuid), from a hook or the System Log.

    Doubles as a tombstone: a group deletion seen here outranks older facts
    about that group that arrive late.
    """

    __tablename__ = "okta_events"

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(128))
    # ``published`` as Okta sent it (None when it could not be read: a parked event) ...
    published: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # ... and the time it was ordered at: ``published``, or its receipt when that was
    # more than the allowed skew in the future (PROVISIONING_OKTA_EVENT_SKEW_SECONDS).
    ordered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The Okta id of the thing the event is about (user, or group for group events).
    subject: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[EventOutcome] = mapped_column(enum_type(EventOutcome))
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_okta_events_subject_type", "subject", "event_type"),)

    @property
    def clamped(self) -> bool:
        """Ordered at its receipt, not at the future time Okta gave it."""
        return (
            self.published is not None
            and self.ordered_at is not None
            and self.ordered_at < self.published
        )


class ParkedEvent(Base):
    """An Okta event that could not be applied, kept as sent with the reason.

    Parking one event never holds back the rest of its delivery or page; an
    open finding (``parked_okta_event``) names each one.
    """

    __tablename__ = "okta_parked_events"

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    # Okta's uuid and type, when the event carried usable ones.
    uuid: Mapped[str | None] = mapped_column(String(64))
    event_type: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(32))
    # The inbox delivery it came in (None: the System Log catch-up).
    delivery_id: Mapped[int | None] = mapped_column(SerialId)
    reason: Mapped[str] = mapped_column(Text)
    event: Mapped[Any] = mapped_column(JSON, nullable=False)
    parked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_okta_parked_events_uuid", "uuid"),)


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class SyncRun(Base):
    """One reconciliation or System Log catch-up: when, what it found, what it cost."""

    __tablename__ = "okta_sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # reconcile | catch-up
    mode: Mapped[str | None] = mapped_column(String(32))  # full | incremental
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[RunStatus] = mapped_column(enum_type(RunStatus), default=RunStatus.RUNNING)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    drift: Mapped[dict] = mapped_column(JSON, default=dict)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_okta_sync_runs_kind", "kind", "status", "started_at"),)


class SyncCursor(Base):
    """Where a poll of Okta resumes: the last ``next`` link it was given."""

    __tablename__ = "okta_sync_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_url: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ImportGroup(Base):
    """A group of an initial import (``provisioning okta import``) and how far it got: the
    checkpoint a resumed import starts from, committed with the members it covers."""

    __tablename__ = "okta_import_groups"

    # The import: the id of the run that began it (a resumed import keeps it).
    import_id: Mapped[int] = mapped_column(
        ForeignKey("okta_sync_runs.id", ondelete="CASCADE"), primary_key=True
    )
    okta_group_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    group_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    # Okta's cursor of the next page of members to fetch (None: the first page).
    after: Mapped[str | None] = mapped_column(String(255))
    pages: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
