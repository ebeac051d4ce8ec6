"""Tables of downstream targets and of the outbox of messages owed to them."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.database import Base, utcnow
from provisioning.types import SerialId, UTCDateTime, enum_type


class TargetKind(enum.StrEnum):
    WEBHOOK = "webhook"  # signed JSON events POSTed to a URL
    SCIM = "scim"  # an outbound SCIM 2.0 server: users, and one group per connector
    # AuthZEN task notifications (provisioning/delivery/callbacks.py), each POSTed to the
    # endpoint its message names: one such target, made by the service on first use.
    CALLBACK = "callback"


class Target(Base):
    """A downstream system told about grants and revocations.

    ``secret`` is the webhook signing key or the SCIM bearer token. Unlike the
    credentials the service checks (stored as digests), it must be usable to
    sign or authenticate, so it is stored as given and never shown again.
    """

    __tablename__ = "targets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[TargetKind] = mapped_column(enum_type(TargetKind))
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(500))
    # None: every connector; otherwise only grants of these connector ids.
    connector_ids: Mapped[list | None] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    max_attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        # There is one callback target (provisioning.delivery.outbox.callback_target).
        Index(
            "ux_targets_callback",
            "kind",
            unique=True,
            postgresql_where=text("kind = 'callback'"),
            sqlite_where=text("kind = 'callback'"),
        ),
    )


class MessageState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"  # parked after too many attempts; retried only by an admin


class OutboxMessage(Base):
    """One event owed to one target, written in the transaction of the change it reports.

    Messages of one (target, user) are delivered in ``id`` order; the
    ``event_id`` is the same on every attempt, so a receiver can drop repeats.
    """

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column()
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column()
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[MessageState] = mapped_column(enum_type(MessageState))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # A worker that claimed the message holds it until then; after, another may.
    leased_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The request that made the change (provisioning.correlation), sent to the target.
    request_id: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        # The head of each (target, user) chain, and the due pending messages.
        Index(
            "ix_outbox_pending_chain",
            "target_id",
            "user_id",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index(
            "ix_outbox_pending_due",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index(
            "ix_outbox_dead",
            "target_id",
            postgresql_where=text("state = 'dead'"),
            sqlite_where=text("state = 'dead'"),
        ),
        Index("ix_outbox_event", "target_id", "event_id", unique=True),
    )
