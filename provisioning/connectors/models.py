"""Tables and vocabulary for connectors (governed MCP integrations) and their actions."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from provisioning.database import Base, utcnow
from provisioning.types import UTCDateTime, enum_type


class ConnectorKind(enum.StrEnum):
    REMOTE = "remote"
    DESKTOP_EXTENSION = "desktop_extension"
    CUSTOM_MCP = "custom_mcp"
    CODE_MCP = "code_mcp"
    API_MCP = "api_mcp"


class AccessLevel(enum.StrEnum):
    """A ladder: each level allows the action kinds of the ones below it.

    ``read`` allows read actions; ``read_write`` adds write actions;
    ``interactive`` adds interactive flows. A connector's *capability* is the
    highest level it can offer; a mapping's *access level* is what it grants.
    """

    READ = "read"
    READ_WRITE = "read_write"
    INTERACTIVE = "interactive"

    @property
    def rank(self) -> int:
        return _LEVEL_RANK[self]

    def allows(self, kind: ActionKind) -> bool:
        """Whether this level lets a user call actions of ``kind``."""
        return self.rank >= _KIND_NEEDS[kind].rank

    def allows_level(self, level: AccessLevel) -> bool:
        """Whether ``level`` is at or below this one."""
        return self.rank >= level.rank


class ActionKind(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    INTERACTIVE = "interactive"


class Policy(enum.StrEnum):
    """Organisation policy of an action, from loosest to strictest."""

    ALWAYS_ALLOW = "always_allow"
    NEEDS_APPROVAL = "needs_approval"
    BLOCKED = "blocked"

    @property
    def strictness(self) -> int:
        return _POLICY_STRICTNESS[self]

    def tighten(self, other: Policy | None) -> Policy:
        """The stricter of the two: a policy can be tightened, never loosened."""
        if other is None or other.strictness <= self.strictness:
            return self
        return other


class Publisher(enum.StrEnum):
    DIRECTORY = "directory"
    THIRD_PARTY = "third_party"
    INTERNAL = "internal"


class ReviewStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class DataClassification(enum.StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    REGULATED = "regulated"


class Interface(enum.StrEnum):
    WEB = "web"
    MOBILE = "mobile"
    DESKTOP = "desktop"
    CODE = "code"


_LEVEL_RANK = {AccessLevel.READ: 1, AccessLevel.READ_WRITE: 2, AccessLevel.INTERACTIVE: 3}
_KIND_NEEDS = {
    ActionKind.READ: AccessLevel.READ,
    ActionKind.WRITE: AccessLevel.READ_WRITE,
    ActionKind.INTERACTIVE: AccessLevel.INTERACTIVE,
}
_POLICY_STRICTNESS = {Policy.ALWAYS_ALLOW: 0, Policy.NEEDS_APPROVAL: 1, Policy.BLOCKED: 2}


class Connector(Base):
    """A governed integration that users can be granted."""

    __tablename__ = "connectors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[ConnectorKind] = mapped_column(enum_type(ConnectorKind))
    capability: Mapped[AccessLevel] = mapped_column(enum_type(AccessLevel))
    publisher: Mapped[Publisher] = mapped_column(enum_type(Publisher))
    security_review: Mapped[ReviewStatus] = mapped_column(
        enum_type(ReviewStatus), default=ReviewStatus.PENDING
    )
    data_classification: Mapped[DataClassification] = mapped_column(
        enum_type(DataClassification), default=DataClassification.INTERNAL
    )
    # Reference to the recorded compliance assessment (required for regulated data).
    compliance_assessment: Mapped[str | None] = mapped_column(String(500))
    interfaces: Mapped[list[str]] = mapped_column(JSON, default=list)
    owner: Mapped[str | None] = mapped_column(String(255))
    reassess_by: Mapped[dt.date | None] = mapped_column(Date)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Policy for an action the connector exposes but we have not catalogued yet.
    unknown_action_policy: Mapped[Policy] = mapped_column(
        enum_type(Policy), default=Policy.NEEDS_APPROVAL
    )
    # Days without use after which a grant is dormant (None: the service default).
    dormant_after_days: Mapped[int | None] = mapped_column(Integer)
    # Auto-remediation: revoke a dormant grant this many days after its finding
    # opened (targets are told when it opens); None: never (the default).
    dormant_grace_days: Mapped[int | None] = mapped_column(Integer)
    # Its MCP server's identity for enforcement points: the RFC 9728 resource URI (the
    # audience of the tokens the server accepts), and the AuthZEN resource type it also
    # answers to besides "connector" (docs/authzen.md).
    resource_uri: Mapped[str | None] = mapped_column(String(500), unique=True)
    resource_type: Mapped[str | None] = mapped_column(String(100), index=True)
    # Where its MCP server answers (streamable HTTP): what the tool catalogue is read from
    # and what the gateway fronts.
    mcp_url: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    actions: Mapped[list[Action]] = relationship(
        back_populates="connector", cascade="all, delete-orphan", order_by="Action.name"
    )


class Action(Base):
    """One tool of a connector with its organisation policy; new actions need approval."""

    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[ActionKind] = mapped_column(enum_type(ActionKind))
    org_policy: Mapped[Policy] = mapped_column(enum_type(Policy), default=Policy.NEEDS_APPROVAL)
    # A ``needs_approval`` action whose calls a second person approves (the connector's
    # request-policy chain: provisioning/entitlements/approvals.py), not the caller alone.
    requires_approver: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    description: Mapped[str | None] = mapped_column(Text)
    # The tool's annotations as its MCP server last stated them: hints kept for reviewers
    # (readOnlyHint, destructiveHint, idempotentHint, openWorldHint, title), never trusted.
    annotations: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # When the server was last found without this tool (None: offered at the last sync).
    vanished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    connector: Mapped[Connector] = relationship(back_populates="actions")

    __table_args__ = (UniqueConstraint("connector_id", "name", name="uq_actions_connector_name"),)
