"""Tables for access requests: per-connector request policies, requests and their decisions."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.connectors.models import AccessLevel
from provisioning.database import Base, utcnow
from provisioning.types import UTCDateTime, enum_type


class Approver(enum.StrEnum):
    """Who decides one stage of a request: the connector's owner or the requester's manager."""

    OWNER = "owner"
    MANAGER = "manager"


class RequestState(enum.StrEnum):
    """``pending`` until decided; only ``approved`` grants (until the request's expiry)."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class RequestDecision(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class RequestPolicy(Base):
    """Whether and how a connector may be requested: its approval chain (one or two stages,
    in order), the longest access a request may ask for, and how long approvers have."""

    __tablename__ = "request_policies"

    connector_id: Mapped[int] = mapped_column(
        ForeignKey("connectors.id", ondelete="CASCADE"), primary_key=True
    )
    approvers: Mapped[list[str]] = mapped_column(JSON)
    max_days: Mapped[int] = mapped_column(Integer)
    decide_within_days: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RequestKind(enum.StrEnum):
    """``access``: a connector for a time; ``call``: one tool call (call-level approval)."""

    ACCESS = "access"
    CALL = "call"


class AccessRequest(Base):
    """One person's request for a connector, for a time, through its approval chain.

    A ``call`` request asks for one tool call instead (the AuthZEN Access Request &
    Approval profile, provisioning/requests/calls.py): ``call`` holds its binding (person,
    connector, tool, argument digest, policy version; a bundle's calls each in ``items``),
    ``task_id`` and ``approval_id`` are its opaque handles, and an approval lasts until
    ``approved_until``. It never sets ``granted_at``/``expires_at``, so it is never a
    source of access.

    ``user_id`` is the person the access is for; ``requested_by_id`` who asked (the
    person, or their manager). ``approvers`` is the chain as it stood when the request
    was made and ``stage`` the index of the stage now deciding. An approved request is a
    source of access (:mod:`provisioning.entitlements.sources`) from ``granted_at`` until
    ``expires_at``; no other state grants anything.
    """

    __tablename__ = "access_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    requested_by_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    requested_by: Mapped[str] = mapped_column(String(255))
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    access_level: Mapped[AccessLevel] = mapped_column(enum_type(AccessLevel))
    actions: Mapped[list[str] | None] = mapped_column(JSON)
    justification: Mapped[str] = mapped_column(Text)
    duration_days: Mapped[int] = mapped_column(Integer)
    approvers: Mapped[list[str]] = mapped_column(JSON)
    stage: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[RequestState] = mapped_column(enum_type(RequestState))
    # Undecided by then, the request expires.
    deadline: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(255))
    granted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When targets were reminded that the access it gave expires soon (once).
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(
        String(16), default=RequestKind.ACCESS, server_default="access"
    )
    task_id: Mapped[str | None] = mapped_column(String(64))
    approval_id: Mapped[str | None] = mapped_column(String(64))
    binding_jti: Mapped[str | None] = mapped_column(String(64))
    approved_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    call: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A digest of the credential and its Idempotency-Key, and of the body it came with.
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    idempotency_digest: Mapped[str | None] = mapped_column(String(64))
    # A call task's callback (provisioning/requests/callbacks.py): endpoint, state, events
    # and the task's status endpoint; None without one.
    callback: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_access_requests_user_connector", "user_id", "connector_id"),
        Index("ix_access_requests_state", "state", "deadline"),
        Index("ux_access_requests_task_id", "task_id", unique=True),
        Index("ux_access_requests_approval_id", "approval_id", unique=True),
        Index("ux_access_requests_binding_jti", "binding_jti", unique=True),
        Index("ux_access_requests_idempotency_key", "idempotency_key", unique=True),
    )


class RequestStep(Base):
    """One approver's decision on one stage of a request: who, in what role, when, why."""

    __tablename__ = "request_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("access_requests.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[int] = mapped_column(Integer)
    role: Mapped[Approver] = mapped_column(enum_type(Approver))
    approver_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    approver: Mapped[str] = mapped_column(String(255))
    decision: Mapped[RequestDecision] = mapped_column(enum_type(RequestDecision))
    comment: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
