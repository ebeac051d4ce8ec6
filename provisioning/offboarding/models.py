"""Table of offboarding requests: who, why, when effective, and what was revoked."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.database import Base, utcnow
from provisioning.types import UTCDateTime, enum_type


class OffboardingState(enum.StrEnum):
    SCHEDULED = "scheduled"
    DONE = "done"
    CANCELLED = "cancelled"


class Offboarding(Base):
    """A request to remove all of a person's access, and its outcome."""

    __tablename__ = "offboardings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # How the requester named the person: userName, externalId or employeeNumber.
    identified_by: Mapped[str] = mapped_column(String(32))
    identifier: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    ticket: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(255))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    effective_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    state: Mapped[OffboardingState] = mapped_column(enum_type(OffboardingState))
    executed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Each grant revoked: {"grant_id", "connector", "access_level"}.
    revoked: Mapped[list] = mapped_column(JSON, default=list)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    # Okta write-back (PROVISIONING_OKTA_WRITEBACK): when done, and each group's outcome.
    okta_writeback_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    okta_writeback: Mapped[dict | None] = mapped_column(JSON)
    # The outbox messages that tell downstream targets (their ids), for acknowledgement.
    outbox_ids: Mapped[list] = mapped_column(JSON, default=list)

    __table_args__ = (
        Index("ix_offboardings_due", "state", "effective_at"),
        Index("ix_offboardings_user", "user_id"),
    )
