"""Tables for users, groups and memberships, as provisioned by the IdP."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, Uuid, and_, case
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, validates

from provisioning import text
from provisioning.database import Base, utcnow
from provisioning.types import JSONDocument, SerialId, UTCDateTime, enum_type


class MembershipSource(enum.StrEnum):
    """Where a membership fact was learned."""

    SCIM = "scim"
    OKTA_HOOK = "okta-hook"
    OKTA_SYNC = "okta-sync"
    ADMIN = "admin"


class UserState(enum.StrEnum):
    """A person's status; every state but ``active`` means no access at all."""

    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    OFFBOARDED = "offboarded"
    DELETED = "deleted"


EMAIL_LENGTH = 320


class User(Base):
    """A person provisioned by the IdP; the Okta user id is kept as ``external_id``.

    A person's status (:attr:`state`, usable in SQL too) is the first of deleted,
    offboarded, deactivated that holds, else active. A user is *eligible* for
    access only while active (:attr:`eligible`).
    """

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_name: Mapped[str] = mapped_column(String(255))
    # lower(user_name): userName is unique without regard to case (RFC 7643 section 4.1.1).
    # The case-insensitive keys (provisioning.text.fold), set with their values: userName
    # is unique without regard to case (RFC 7643 section 4.1.1), and SCIM filters, the
    # admin search and lookups by login compare these.
    user_name_key: Mapped[str] = mapped_column(String(text.KEY_LENGTH))
    external_id: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    display_name_key: Mapped[str | None] = mapped_column(String(text.KEY_LENGTH))
    given_name: Mapped[str | None] = mapped_column(String(255))
    given_name_key: Mapped[str | None] = mapped_column(String(text.KEY_LENGTH))
    family_name: Mapped[str | None] = mapped_column(String(255))
    family_name_key: Mapped[str | None] = mapped_column(String(text.KEY_LENGTH))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    email_key: Mapped[str | None] = mapped_column(String(EMAIL_LENGTH))
    employee_number: Mapped[str | None] = mapped_column(String(64), index=True)
    employee_number_key: Mapped[str | None] = mapped_column(String(text.KEY_LENGTH))
    department: Mapped[str | None] = mapped_column(String(255))
    department_key: Mapped[str | None] = mapped_column(String(text.KEY_LENGTH))
    manager_id: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Okta ``published`` time of the fact that last set ``active``; older facts lose.
    status_published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Okta ``published`` time of the fact that last set the profile fields.
    profile_published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    offboarded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # SCIM attributes the service does not model, kept and returned unchanged.
    scim_attributes: Mapped[dict | None] = mapped_column(JSONDocument)
    # Bumped by every UPDATE of the row (SQLAlchemy version counter): the SCIM ETag.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    __table_args__ = (
        Index("ix_users_display_name_key", "display_name_key"),
        Index("ix_users_email_key", "email_key"),
        Index("ix_users_active", "active"),
        Index("ix_users_updated_at", "updated_at"),
        Index(
            "uq_users_user_name_key",
            "user_name_key",
            unique=True,
            sqlite_where=deleted_at.is_(None),
            postgresql_where=deleted_at.is_(None),
        ),
        Index(
            "uq_users_external_id",
            "external_id",
            unique=True,
            sqlite_where=deleted_at.is_(None),
            postgresql_where=deleted_at.is_(None),
        ),
    )

    KEYED = (
        "user_name",
        "display_name",
        "email",
        "given_name",
        "family_name",
        "employee_number",
        "department",
    )
    """The columns whose folded key is kept in ``<column>_key``."""

    @staticmethod
    def key_of(name: str, value: str | None) -> str | None:
        """The key of column ``name`` for ``value`` (:func:`provisioning.text.key`)."""
        limit = EMAIL_LENGTH if name == "email" else text.KEY_LENGTH
        return text.optional_key(value, name, limit)

    @validates(*KEYED)
    def _keyed(self, name: str, value: str | None) -> str | None:
        """Set a value's key with it."""
        setattr(self, f"{name}_key", self.key_of(name, value))
        return value

    @hybrid_property
    def state(self) -> UserState:
        """The person's status: deleted before offboarded before deactivated, else active."""
        if self.deleted_at is not None:
            return UserState.DELETED
        if self.offboarded_at is not None:
            return UserState.OFFBOARDED
        if not self.active:
            return UserState.DEACTIVATED
        return UserState.ACTIVE

    @classmethod
    def _state_cases(cls):
        # The same order in SQL: the first condition that holds names the state.
        return (
            (cls.deleted_at.is_not(None), str(UserState.DELETED)),
            (cls.offboarded_at.is_not(None), str(UserState.OFFBOARDED)),
            (cls.active.is_not(True), str(UserState.DEACTIVATED)),
        )

    @state.inplace.expression
    @classmethod
    def _state_expression(cls):
        return case(*cls._state_cases(), else_=str(UserState.ACTIVE))

    @hybrid_property
    def eligible(self) -> bool:
        """The user may hold access: their state is active."""
        return self.state is UserState.ACTIVE

    @eligible.inplace.expression
    @classmethod
    def _eligible_expression(cls):
        # state = 'active' as plain column tests, which the planners estimate and index.
        return and_(*(~denied for denied, _ in reversed(cls._state_cases())))


class Group(Base):
    """An IdP group; the Okta group id is kept as ``external_id``."""

    __tablename__ = "groups"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    display_name: Mapped[str] = mapped_column(String(255), index=True)
    # The case-insensitive key of the name (provisioning.text.fold), set with it.
    display_name_key: Mapped[str] = mapped_column(String(text.KEY_LENGTH))
    external_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # SCIM attributes the service does not model, kept and returned unchanged.
    scim_attributes: Mapped[dict | None] = mapped_column(JSONDocument)
    # Bumped by every UPDATE of the row (SQLAlchemy version counter): the SCIM ETag.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    __table_args__ = (
        Index("ix_groups_display_name_key", "display_name_key"),
        Index("ix_groups_updated_at", "updated_at"),
    )

    @validates("display_name")
    def _keyed(self, name: str, value: str) -> str:
        """Set the name's folded key with it (:func:`provisioning.text.key`)."""
        self.display_name_key = text.key(value, "displayName")
        return value


class Membership(Base):
    """User in group. A removal is kept (``present`` false) with the time Okta
    published it, so that a late or repeated older event cannot undo it."""

    __tablename__ = "memberships"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    present: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[MembershipSource] = mapped_column(enum_type(MembershipSource))
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_memberships_group_present", "group_id", "present"),)


class PendingKind(enum.StrEnum):
    """A denial about someone (or a group) not known yet."""

    DEACTIVATION = "deactivation"  # the user, by Okta id, is not active
    REMOVAL = "removal"  # the user is not in the group (both by Okta id)


class PendingFact(Base):
    """A denial from the IdP about a user or group we do not know yet, kept by Okta id.

    Applied, with its published time, through the same order-safe functions
    when the user (and group) appear by any path, then deleted; so an earlier
    create, activation or add that arrives later cannot override it.
    """

    __tablename__ = "pending_facts"

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    kind: Mapped[PendingKind] = mapped_column(enum_type(PendingKind))
    user_external_id: Mapped[str] = mapped_column(String(255))
    group_external_id: Mapped[str | None] = mapped_column(String(255))
    published_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # The origin of the fact, for the audit events of its application.
    actor: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_pending_facts_user", "user_external_id"),
        Index("ix_pending_facts_group", "group_external_id"),
    )
