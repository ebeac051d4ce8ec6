"""Tables for audit events and the head of their hash chain."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Index, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.database import Base
from provisioning.types import JSONDocument, SerialId, UTCDateTime

GENESIS_HASH = "0" * 64


class AuditEvent(Base):
    """One recorded change. Append-only (database triggers refuse UPDATE and
    DELETE); ``hash`` chains it to the event before it."""

    __tablename__ = "audit_events"

    # Assigned by the writer holding the chain head, so ids have no gaps.
    id: Mapped[int] = mapped_column(SerialId, primary_key=True, autoincrement=False)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(255), index=True)
    source: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(255))
    # The person the change concerns, when there is one (for "everything about X").
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    before: Mapped[dict | None] = mapped_column(JSONDocument)
    after: Mapped[dict | None] = mapped_column(JSONDocument)
    # The request that made the change (provisioning.correlation); hashed when present.
    request_id: Mapped[str | None] = mapped_column(String(128))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_events_subject", "subject_type", "subject_id"),)


class AuditChainHead(Base):
    """The single row naming the last event of the chain.

    Writers lock it to append (so the chain never forks), and the verifier
    compares it with the last event (so cutting events off the end is seen).
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_event_id: Mapped[int] = mapped_column(SerialId)
    last_hash: Mapped[str] = mapped_column(String(64))
