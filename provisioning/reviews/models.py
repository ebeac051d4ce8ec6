"""Tables of access review campaigns and their items (one grant each)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.database import Base, utcnow
from provisioning.types import SerialId, UTCDateTime, enum_type


class CampaignTrigger(enum.StrEnum):
    """What started a campaign."""

    SCHEDULE = "schedule"
    ROLE_CHANGE = "role_change"
    MANUAL = "manual"


class CampaignState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class NoResponse(enum.StrEnum):
    """What happens to an item nobody decided when its campaign closes."""

    KEEP = "keep"
    REVOKE = "revoke"


class ReviewDecision(enum.StrEnum):
    APPROVE = "approve"
    REVOKE = "revoke"


class ReviewerRole(enum.StrEnum):
    """Why the reviewer reviews: the user's manager, or (no manager known) the connector's owner."""

    MANAGER = "manager"
    OWNER = "owner"


class ItemOutcome(enum.StrEnum):
    """What closing the campaign did to the item's grant."""

    KEPT = "kept"
    REVOKED = "revoked"
    GONE = "gone"  # the grant was revoked by something else before the campaign closed


class ReviewCampaign(Base):
    """A review of live grants (all, or some connectors', or one person's after a role change).

    Open until its deadline, then closed by the ``reviews-close`` job (or by
    hand): each item's decision, or the campaign's ``no_response`` outcome
    for items nobody decided, is applied through the engine.
    """

    __tablename__ = "review_campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[CampaignTrigger] = mapped_column(enum_type(CampaignTrigger))
    # Scope: connector ids reviewed; None means every connector.
    connector_ids: Mapped[list[int] | None] = mapped_column(JSON)
    # The person whose role changed (role-change campaigns review only their grants).
    subject_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE")
    )
    # What changed, for role-change campaigns: {"department": [before, after], ...}.
    context: Mapped[dict | None] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    deadline: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    no_response: Mapped[NoResponse] = mapped_column(enum_type(NoResponse))
    state: Mapped[CampaignState] = mapped_column(
        enum_type(CampaignState), default=CampaignState.OPEN
    )
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(255))
    # {"items": n} from creation; the decisions and outcomes are added when it closes.
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    # When targets were reminded of the coming deadline (once per campaign).
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_review_campaigns_state_deadline", "state", "deadline"),
        Index("ix_review_campaigns_trigger_created", "trigger", "created_at"),
    )


class ReviewItem(Base):
    """One grant under review: a snapshot of its context, its reviewer, the decision, the outcome.

    The snapshot (``why`` it was granted, last use, user status, department,
    access level...) is what the reviewer saw; it is taken when the campaign
    is created and never changes.
    """

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    # No foreign keys on these: a campaign writes 100k items and more in one INSERT … SELECT
    # from the live grants and the campaign row it has just made, and on PostgreSQL each
    # foreign key costs a locking look-up per row (1.5 s per 100k items each, measured).
    # Campaigns and grants are never deleted, so nothing can leave an item dangling.
    campaign_id: Mapped[int] = mapped_column(Integer)
    grant_id: Mapped[int] = mapped_column(SerialId)
    # The grant's user and connector, copied for filtering.
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    connector_id: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[dict] = mapped_column(JSON)
    # The manager's userName, else the connector's owner; None if neither is known.
    reviewer: Mapped[str | None] = mapped_column(String(255))
    reviewer_role: Mapped[ReviewerRole | None] = mapped_column(enum_type(ReviewerRole))
    reviewer_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    decision: Mapped[ReviewDecision | None] = mapped_column(enum_type(ReviewDecision))
    comment: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(255))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[ItemOutcome | None] = mapped_column(enum_type(ItemOutcome))
    applied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_review_items_campaign", "campaign_id", "id"),
        Index("ix_review_items_campaign_reviewer", "campaign_id", "reviewer", "id"),
    )
