"""Tables for the sources of access (mappings, exceptions, review withdrawals), grants, SoD."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.connectors.models import AccessLevel
from provisioning.database import Base, utcnow
from provisioning.types import SerialId, UTCDateTime, enum_type


class Mapping(Base):
    """Members of ``group`` are entitled to ``connector`` at ``access_level``.

    ``actions`` optionally limits the grant to some actions (by name);
    ``policies`` optionally tightens action policies (action name to policy) --
    a mapping can only tighten the organisation policy, never loosen it.
    An expired mapping justifies nothing.
    """

    __tablename__ = "mappings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    connector_id: Mapped[int] = mapped_column(
        ForeignKey("connectors.id", ondelete="CASCADE"), index=True
    )
    access_level: Mapped[AccessLevel] = mapped_column(enum_type(AccessLevel))
    actions: Mapped[list[str] | None] = mapped_column(JSON)
    policies: Mapped[dict[str, str] | None] = mapped_column(JSON)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When targets were reminded that it expires soon (once).
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("group_id", "connector_id", name="uq_mappings_group_connector"),
    )


class ManualException(Base):
    """Access to one connector granted to one person outside any group, with a
    justification and a mandatory expiry."""

    __tablename__ = "manual_exceptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    access_level: Mapped[AccessLevel] = mapped_column(enum_type(AccessLevel))
    actions: Mapped[list[str] | None] = mapped_column(JSON)
    justification: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When targets were reminded that it expires soon (once).
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Grant(Base):
    """A user's materialised access to one connector.

    At most one live (unrevoked) grant per user and connector; revoked grants
    are kept as history. Why a live grant exists is derived from the mappings
    and exceptions that justify it (:func:`provisioning.entitlements.engine.explain`);
    the audit event that created it records the reasons at that moment.
    """

    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    access_level: Mapped[AccessLevel] = mapped_column(enum_type(AccessLevel))
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Of that last use (an AuthZEN evaluation): the agent acting for the person, the answer's id.
    last_used_agent: Mapped[str | None] = mapped_column(String(1000))
    last_evaluation_id: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        Index(
            "uq_grants_live",
            "user_id",
            "connector_id",
            unique=True,
            sqlite_where=revoked_at.is_(None),
            postgresql_where=revoked_at.is_(None),
        ),
        Index(
            "ix_grants_live_connector",
            "connector_id",
            sqlite_where=revoked_at.is_(None),
            postgresql_where=revoked_at.is_(None),
        ),
        Index("ix_grants_user", "user_id"),
    )


class GrantDay(Base):
    """Grants made and revoked on one UTC day, counted by the engine in the transaction
    that writes them (:mod:`provisioning.entitlements.counts`): the overview's chart and
    live total read these rows, not every grant."""

    __tablename__ = "grant_days"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    granted: Mapped[int] = mapped_column(BigInteger, default=0)
    revoked: Mapped[int] = mapped_column(BigInteger, default=0)


class HoldState(enum.StrEnum):
    HELD = "held"
    CONFIRMED = "confirmed"


class RevocationHold(Base):
    """Revocations the mass-revocation brake held back, awaiting an admin's confirmation.

    ``user_ids`` are the users whose grants the change would have revoked;
    confirming re-runs the engine over them (so it revokes what is still
    unjustified at that moment, not a stale list).
    """

    __tablename__ = "revocation_holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cause: Mapped[str] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(32))
    user_ids: Mapped[list] = mapped_column(JSON)
    revocations: Mapped[int] = mapped_column(Integer)
    active_grants: Mapped[int] = mapped_column(Integer)
    share: Mapped[float] = mapped_column()
    state: Mapped[HoldState] = mapped_column(enum_type(HoldState))
    held_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(255))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_revocation_holds_state", "state"),)


class ReviewRevocation(Base):
    """A review's withdrawal of one user's access to one connector: a fact the engine reads.

    It withdraws every mapping and manual exception that could justify that
    access and was created at or before ``revoked_at``: those stop justifying
    it, now and on every later run of the engine, until an admin lifts it. A source
    created after it (a new mapping, a new exception) is a new decision by someone
    entitled to make it, and grants again. Written by :mod:`provisioning.reviews.campaigns` and the
    dormant-access remediation; read through :mod:`provisioning.entitlements.sources`.
    """

    __tablename__ = "review_revocations"

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    # The review item that decided it; None when the dormant-access remediation did.
    item_id: Mapped[int | None] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"))
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str] = mapped_column(String(255))
    # An admin lifted it (who, why): it withdraws nothing any more
    # (:func:`provisioning.reviews.campaigns.lift`).
    lifted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lifted_by: Mapped[str | None] = mapped_column(String(255))
    lift_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_review_revocations_user_connector", "user_id", "connector_id", "revoked_at"),
        Index("ix_review_revocations_item", "item_id"),
    )


class SeparationRule(Base):
    """Incompatible access (separation of duties): nobody may hold any part of ``these``
    together with any part of ``those`` (each a connector's id, or ``[id, action name]`` for
    one of its actions; the two sides never overlap), unless a live
    :class:`SeparationExemption` says so for that person. ``owner`` answers for it."""

    __tablename__ = "separation_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    these: Mapped[list[int]] = mapped_column(JSON)
    those: Mapped[list[int]] = mapped_column(JSON)
    owner: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class SeparationExemption(Base):
    """One person allowed to hold what a separation rule forbids, with a justification, an
    approver and a mandatory expiry."""

    __tablename__ = "separation_exemptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("separation_rules.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    justification: Mapped[str] = mapped_column(Text)
    approved_by: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_separation_exemptions_rule_user", "rule_id", "user_id"),)
