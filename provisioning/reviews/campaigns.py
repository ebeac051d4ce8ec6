"""Access review campaigns: created set-wise over live grants, decided item by item, closed
through the engine.

**Creation.** A campaign covers the live grants of its scope (every connector
or some; one person's grants for a campaign started by a role change). Its
items are written by one ``INSERT … SELECT``: each live grant with a snapshot
of its context built by the database itself (why it is held, from the
engine's own :func:`~provisioning.entitlements.engine.justifications`; last
use; the user's status, department and manager; access level) and its
reviewer. The reviewer is the user's manager (the enterprise extension's
``manager``, matched to a user by id, externalId or userName, who must be
eligible and someone else), else the connector's owner, else nobody (an
admin decides).

**Decisions** (approve or revoke, with a comment) are accepted while the
campaign is open and before its deadline; a later decision replaces an
earlier one until the campaign closes, each one audited. Only the item's
reviewer decides it (:func:`decider_role`); an item without a reviewer is
decided by an admin (the fallback), and an admin may override the named
reviewer with a comment saying why; each is audited as such (``as``). Nobody
decides a review of their own access.

**Closing** (on the deadline by the ``reviews-close`` job, or by hand) settles
every item: its decision, or the campaign's ``no_response`` outcome (keep or
revoke) for an item nobody decided. A revocation is never done by editing the
grant: the engine recomputes grants from facts, and would give back on its
next run anything that a fact still justifies. So a revoked item records a
:class:`~provisioning.entitlements.models.ReviewRevocation` for its user and
connector, and the engine treats every mapping and exception created at or
before it as withdrawn for that user and connector
(:func:`~provisioning.entitlements.sources.withdrawn`, part of every source's
liveness, used by the engine, the decision path and the stale-access scan
alike). The engine then runs for the users concerned and revokes the grants,
audited with the reason "revoked by access review"; every later run of the
engine keeps them revoked, whatever SCIM, Okta or reconciliation say about the
same groups. Access comes back only through a source created after the review
(a new mapping or a manual exception, each a deliberate, audited decision of an
admin; when such an exception expires, the old mappings are still withdrawn
and the access goes again), or when an admin **lifts** the item's revocation with
a reason (:func:`lift`): the revocation stays as history but withdraws nothing
any more, and the engine gives back what the sources still justify. A row rather
than, say, deleting the membership: the membership is Okta's fact, which the next
event or reconciliation would restore, and a review of one connector must not take
away the other connectors the same group gives.

Every change writes audit events in the caller's transaction: the campaign's
creation and closing (with its counts), each decision, and each grant the
engine revokes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Uuid,
    and_,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from provisioning import text
from provisioning.audit import log as audit
from provisioning.audit.log import Entry, Origin
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.delivery import outbox
from provisioning.entitlements import engine
from provisioning.entitlements.models import Grant, ReviewRevocation
from provisioning.identity.models import User
from provisioning.reviews.models import (
    CampaignState,
    CampaignTrigger,
    ItemOutcome,
    NoResponse,
    ReviewCampaign,
    ReviewDecision,
    ReviewerRole,
    ReviewItem,
)
from provisioning.settings import DEFAULTS, Settings
from provisioning.types import json_aggregate, json_object

_UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class ReviewError(ValueError):
    """A campaign or decision that cannot be made as asked; nothing was changed."""


class CampaignClosed(ReviewError):
    """The campaign no longer takes decisions: closed, or past its deadline."""


class NotReviewer(ReviewError):
    """The person deciding is not the item's reviewer (and no override was asked)."""


class NotLiftable(ReviewError):
    """The item holds no revocation in force to lift: not revoked (yet), or lifted already."""


# -- creation -----------------------------------------------------------------------


def create_campaign(
    session: Session,
    origin: Origin,
    *,
    name: str,
    trigger: CampaignTrigger,
    deadline: dt.datetime,
    no_response: NoResponse,
    connector_ids: Iterable[int] | None = None,
    subject_user_id: uuid.UUID | None = None,
    context: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> ReviewCampaign:
    """Open a campaign over the live grants in scope, one item each, in this transaction.

    ``now`` is its creation time (the one a deadline was counted from, if given).
    """
    now = now or utcnow()
    if deadline <= now:
        raise ReviewError("the deadline must be in the future")
    scope = None if connector_ids is None else sorted(set(connector_ids))
    if scope is not None and not scope:
        raise ReviewError("name at least one connector, or none for every connector")
    # Serialised with the engine's runs: the snapshot is of one committed state.
    audit.lock(session)
    campaign = ReviewCampaign(
        name=name,
        trigger=trigger,
        connector_ids=scope,
        subject_user_id=subject_user_id,
        context=context,
        created_by=origin.actor,
        created_at=now,
        deadline=deadline,
        no_response=no_response,
        state=CampaignState.OPEN,
        counts={},
    )
    session.add(campaign)
    session.flush()
    columns = [
        "campaign_id",
        "grant_id",
        "user_id",
        "connector_id",
        "snapshot",
        "reviewer",
        "reviewer_role",
        "reviewer_user_id",
    ]
    session.execute(insert(ReviewItem).from_select(columns, _items(session, campaign)))
    # Counted, not read from the insert's rowcount (-1 through psycopg here).
    inserted = session.scalar(
        select(func.count(ReviewItem.id)).where(ReviewItem.campaign_id == campaign.id)
    )
    campaign.counts = {"items": inserted}
    audit.record(
        session,
        origin,
        [
            Entry(
                "review.created",
                "review_campaign",
                str(campaign.id),
                user_id=subject_user_id,
                after=campaign_state(campaign),
            )
        ],
    )
    return campaign


def campaign_state(campaign: ReviewCampaign) -> dict[str, Any]:
    return {
        "name": campaign.name,
        "trigger": str(campaign.trigger),
        "connector_ids": campaign.connector_ids,
        "subject_user_id": campaign.subject_user_id,
        "context": campaign.context,
        "deadline": campaign.deadline,
        "no_response": str(campaign.no_response),
        "state": str(campaign.state),
        "counts": campaign.counts,
    }


def _items(session: Session, campaign: ReviewCampaign) -> Select:
    """One row per live grant in the campaign's scope, ready for ``review_items``."""
    dialect = session.get_bind().dialect.name
    postgres = dialect == "postgresql"
    subject = campaign.subject_user_id
    scope = campaign.connector_ids

    affected = engine.Affected.users(subject) if subject else engine.Affected.everyone()
    sources = engine.justifications(affected).subquery("sources")
    reason = sources.c.via.concat(":").concat(cast(sources.c.ref, String))
    why = select(
        sources.c.user_id,
        sources.c.connector_id,
        json_aggregate(dialect, reason, reason).label("why"),
    ).group_by(sources.c.user_id, sources.c.connector_id)
    if scope is not None:
        why = why.where(sources.c.connector_id.in_(scope))
    why = why.subquery("why")

    managers = _managers(postgres, subject)
    if postgres:
        why_json = func.coalesce(why.c.why, func.json_build_array())
    else:
        why_json = func.json(func.coalesce(why.c.why, "[]"))
    snapshot = json_object(
        dialect,
        user_name=User.user_name,
        connector=Connector.slug,
        access_level=Grant.access_level,
        granted_at=_iso(postgres, Grant.granted_at),
        last_used_at=_iso(postgres, Grant.last_used_at),
        why=why_json,
        user_status=User.state,
        department=User.department,
        manager=User.manager_id,
    )
    statement = (
        select(
            literal(campaign.id),
            Grant.id,
            Grant.user_id,
            Grant.connector_id,
            snapshot,
            func.coalesce(managers.c.manager_name, Connector.owner),
            case(
                (managers.c.manager_id.is_not(None), str(ReviewerRole.MANAGER)),
                (Connector.owner.is_not(None), str(ReviewerRole.OWNER)),
                else_=None,
            ),
            managers.c.manager_id,
        )
        .select_from(Grant)
        .join(User, User.id == Grant.user_id)
        .join(Connector, Connector.id == Grant.connector_id)
        .outerjoin(managers, managers.c.user_id == Grant.user_id)
        .outerjoin(
            why,
            and_(why.c.user_id == Grant.user_id, why.c.connector_id == Grant.connector_id),
        )
        .where(Grant.revoked_at.is_(None))
    )
    if subject is not None:
        statement = statement.where(Grant.user_id == subject)
    if scope is not None:
        statement = statement.where(Grant.connector_id.in_(scope))
    return statement


def _managers(postgres: bool, subject: uuid.UUID | None):
    """Each user's manager, if the enterprise ``manager`` names an eligible other user.

    The manager may be named by our id (what SCIM clients send), by Okta id
    (``externalId``, what Okta's profile ``managerId`` holds) or by userName;
    the first that matches wins.
    """
    person = aliased(User, name="person")
    by = [aliased(User, name=f"manager_{n}") for n in range(3)]
    if postgres:
        # Compared as uuids (not as text), so that the planner knows the join finds one row.
        as_uuid = case(
            (
                person.manager_id.regexp_match(_UUID_PATTERN, flags="i"),
                cast(person.manager_id, Uuid),
            ),
            else_=None,
        )
        by_id = by[0].id == as_uuid
    else:  # SQLite keeps a uuid as 32 hex digits
        by_id = by[0].id == func.lower(func.replace(person.manager_id, "-", ""))
    matches = [
        by_id,
        by[1].external_id == person.manager_id,
        by[2].user_name_key
        == text.fold_sql(person.manager_id, "postgresql" if postgres else "sqlite"),
    ]
    statement = select(
        person.id.label("user_id"),
        func.coalesce(*(m.id for m in by)).label("manager_id"),
        func.coalesce(*(m.user_name for m in by)).label("manager_name"),
    ).where(person.manager_id.is_not(None))
    for manager, match in zip(by, matches, strict=True):
        statement = statement.outerjoin(
            manager, and_(match, manager.eligible, manager.id != person.id)
        )
    if subject is not None:
        statement = statement.where(person.id == subject)
    return statement.subquery("managers")


def _iso(postgres: bool, column: Any) -> ColumnElement[Any]:
    """A stored (naive UTC) timestamp as ISO 8601 text with a Z, the same on both databases."""
    if postgres:
        return func.to_char(column, literal('YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    # SQLite holds "YYYY-MM-DD HH:MM:SS.ffffff".
    return func.replace(column, " ", "T").concat("Z")


# -- decisions ----------------------------------------------------------------------


def _locked(session: Session, campaign_id: int) -> ReviewCampaign | None:
    """The campaign, its row locked for the rest of the transaction (decisions and closing
    queue on it, so no decision lands after the campaign's outcome is settled)."""
    return session.scalar(
        select(ReviewCampaign)
        .where(ReviewCampaign.id == campaign_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _decision_state(item: ReviewItem) -> dict[str, Any]:
    return {
        "decision": None if item.decision is None else str(item.decision),
        "comment": item.comment,
        "decided_by": item.decided_by,
    }


def decider_role(
    item: ReviewItem,
    decider: User | None,
    *,
    override: bool,
    comment: str | None,
    fallback: User | None = None,
) -> str:
    """As what ``decider`` (None: an admin credential speaking for no person) may decide
    ``item``: ``reviewer``, ``fallback`` (the item has no reviewer: the fallback reviewer
    decides it, PROVISIONING_REVIEW_FALLBACK, or any admin when none is named) or
    ``override`` (an admin instead of the reviewer or the fallback reviewer, saying why);
    else :class:`NotReviewer`."""
    if decider is not None and decider.id == item.user_id:
        raise NotReviewer("nobody decides the review of their own access")
    named = {text.fold(item.reviewer)} if item.reviewer else set()
    if decider is not None and (
        decider.id == item.reviewer_user_id or named & {decider.user_name_key, decider.email_key}
    ):
        return "reviewer"
    unreviewed = item.reviewer is None and item.reviewer_user_id is None
    if unreviewed and (fallback is None or (decider is not None and decider.id == fallback.id)):
        return "fallback"
    if override:
        if not comment:
            raise NotReviewer("an override of the reviewer says why, in a comment")
        return "override"
    who = decider.user_name if decider is not None else "a credential bound to no person"
    named = (
        f"the fallback reviewer {fallback.user_name}"
        if unreviewed and fallback
        else (f"its reviewer {item.reviewer}")
    )
    raise NotReviewer(
        f"item {item.id} is decided by {named}, not {who} (an admin may override, saying why)"
    )


def decide(
    session: Session,
    origin: Origin,
    item: ReviewItem,
    decision: ReviewDecision,
    comment: str | None = None,
    *,
    decider: User | None = None,
    override: bool = False,
    fallback: User | None = None,
) -> ReviewItem:
    """Record a decision on an item by ``decider`` (:func:`decider_role`); a later one
    replaces it until the campaign closes.

    :class:`CampaignClosed` once the campaign is closed or past its deadline;
    :class:`NotReviewer` when ``decider`` may not decide it.
    """
    campaign = _locked(session, item.campaign_id)
    assert campaign is not None  # an item's campaign is never deleted while the item exists
    session.refresh(item)  # as the decision before this one left it
    now = utcnow()
    if campaign.state is CampaignState.CLOSED:
        raise CampaignClosed(f"review campaign {campaign.id} is closed")
    if campaign.deadline <= now:
        raise CampaignClosed(
            f"review campaign {campaign.id} passed its deadline "
            f"({campaign.deadline.isoformat()}) and is closing"
        )
    role = decider_role(item, decider, override=override, comment=comment, fallback=fallback)
    before = _decision_state(item)
    item.decision = ReviewDecision(decision)
    item.comment = comment
    item.decided_by = decider.user_name if decider is not None else origin.actor
    item.decided_at = now
    session.flush()
    audit.record(
        session,
        origin,
        [
            Entry(
                "review.decided",
                "review_item",
                str(item.id),
                user_id=item.user_id,
                reason=comment,
                before=before if before["decision"] is not None else None,
                after={
                    **_decision_state(item),
                    "campaign_id": campaign.id,
                    "grant_id": item.grant_id,
                    "connector_id": item.connector_id,
                    "as": role,
                    "actor": origin.actor,
                },
            )
        ],
    )
    return item


def inbox(
    session: Session, reviewer: str, *, unreviewed: bool = False, limit: int = 500
) -> list[tuple[ReviewItem, str]]:
    """The items of open campaigns that ``reviewer`` (a userName, or a connector's owner)
    is to decide, undecided first, each with its campaign's name; with ``unreviewed`` (the
    reviewer is the configured fallback reviewer) also the items without a reviewer."""
    mine = ReviewItem.reviewer == reviewer
    if unreviewed:
        mine = or_(mine, and_(ReviewItem.reviewer.is_(None), ReviewItem.reviewer_user_id.is_(None)))
    rows = session.execute(
        select(ReviewItem, ReviewCampaign.name)
        .join(ReviewCampaign, ReviewCampaign.id == ReviewItem.campaign_id)
        .where(ReviewCampaign.state == CampaignState.OPEN, mine)
        .order_by(ReviewItem.decision.is_not(None), ReviewItem.id)
        .limit(limit)
    )
    return [(item, name) for item, name in rows]


# -- lifting --------------------------------------------------------------------------


def lift(
    session: Session,
    origin: Origin,
    item: ReviewItem,
    reason: str,
    *,
    lifter: User | None = None,
) -> tuple[ReviewRevocation, engine.Diff]:
    """Lift the revocation a closed campaign applied to ``item``, in this transaction: it
    withdraws nothing any more, and the engine runs for the item's user (what a mapping or
    exception still justifies comes back, audited like any grant).

    ``lifter`` is the person lifting it (None: a credential bound to no person), recorded
    as the decisions are; nobody lifts a revocation of their own access
    (:class:`NotReviewer`). :class:`NotLiftable` unless the item was revoked and its
    revocation still holds; :class:`ReviewError` for a blank reason.
    """
    if not reason or not reason.strip():
        raise ReviewError("lifting a revocation says why: give a reason")
    if lifter is not None and lifter.id == item.user_id:
        raise NotReviewer("nobody lifts the revocation of their own access")
    revocation = session.scalar(
        select(ReviewRevocation)
        .where(ReviewRevocation.item_id == item.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if revocation is None:
        state = (
            f"was {item.outcome}"
            if item.outcome is not None
            else "is in an open campaign: decide it again instead"
        )
        raise NotLiftable(f"item {item.id} holds no revocation to lift: it {state}")
    if revocation.lifted_at is not None:
        raise NotLiftable(
            f"the revocation of item {item.id} was lifted already "
            f"({revocation.lifted_at.isoformat()}, by {revocation.lifted_by})"
        )
    revocation.lifted_at = utcnow()
    revocation.lifted_by = lifter.user_name if lifter is not None else origin.actor
    revocation.lift_reason = reason
    session.flush()
    audit.record(
        session,
        origin,
        [
            Entry(
                "review.revocation_lifted",
                "review_item",
                str(item.id),
                user_id=item.user_id,
                reason=reason,
                before={"revoked_at": revocation.revoked_at, "revoked_by": revocation.revoked_by},
                after={
                    "campaign_id": item.campaign_id,
                    "grant_id": item.grant_id,
                    "connector_id": item.connector_id,
                    "lifted_by": revocation.lifted_by,
                    "actor": origin.actor,
                },
            )
        ],
    )
    lifted = Origin(origin.actor, origin.source, f"review revocation lifted: {reason}"[:500])
    return revocation, engine.apply(session, engine.Affected.users(item.user_id), lifted)


# -- closing ------------------------------------------------------------------------


def due(session: Session, now: dt.datetime | None = None) -> list[int]:
    """Open campaigns whose deadline has passed, oldest deadline first."""
    now = now or utcnow()
    return list(
        session.scalars(
            select(ReviewCampaign.id)
            .where(ReviewCampaign.state == CampaignState.OPEN, ReviewCampaign.deadline <= now)
            .order_by(ReviewCampaign.deadline, ReviewCampaign.id)
        )
    )


def remind(session: Session, within: dt.timedelta) -> list[int]:
    """Tell the targets, once per campaign, that its deadline is within ``within``.

    A ``review.deadline`` event: the campaign, its deadline, how many items
    nobody decided yet, and those per reviewer (the 100 with most to do).
    """
    now = utcnow()
    campaigns = session.scalars(
        select(ReviewCampaign).where(
            ReviewCampaign.state == CampaignState.OPEN,
            ReviewCampaign.reminded_at.is_(None),
            ReviewCampaign.deadline > now,
            ReviewCampaign.deadline <= now + within,
        )
    ).all()
    events = []
    for campaign in campaigns:
        undecided = func.count(ReviewItem.id)
        per_reviewer = session.execute(
            select(ReviewItem.reviewer, undecided)
            .where(ReviewItem.campaign_id == campaign.id, ReviewItem.decision.is_(None))
            .group_by(ReviewItem.reviewer)
            .order_by(undecided.desc())
        ).all()
        data = {
            "campaign": {
                "id": campaign.id,
                "name": campaign.name,
                "deadline": campaign.deadline.isoformat(),
                "no_response": str(campaign.no_response),
                "undecided": sum(n for _, n in per_reviewer),
                "reviewers": [{"reviewer": r, "undecided": n} for r, n in per_reviewer[:100]],
            }
        }
        events.append(outbox.Event("review.deadline", outbox.SERVICE, data))
        campaign.reminded_at = now
    outbox.enqueue(session, events)
    return [c.id for c in campaigns]


def close_campaign(session: Session, origin: Origin, campaign_id: int) -> ReviewCampaign:
    """Settle every item and apply the revocations through the engine, in this transaction.

    :class:`CampaignClosed` if it is closed already; :class:`LookupError` if there is none.
    """
    campaign = _locked(session, campaign_id)
    if campaign is None:
        raise LookupError(f"no review campaign {campaign_id}")
    if campaign.state is CampaignState.CLOSED:
        raise CampaignClosed(f"review campaign {campaign.id} is closed")
    audit.lock(session)
    session.flush()
    now = utcnow()
    mine = ReviewItem.campaign_id == campaign.id
    unsettled = and_(mine, ReviewItem.outcome.is_(None))
    revoke = ReviewItem.decision == ReviewDecision.REVOKE
    if campaign.no_response is NoResponse.REVOKE:
        revoke = or_(revoke, ReviewItem.decision.is_(None))
    plain = {"synchronize_session": False}

    # Grants something else revoked meanwhile: nothing left to decide on.
    live = exists().where(Grant.id == ReviewItem.grant_id, Grant.revoked_at.is_(None))
    session.execute(
        update(ReviewItem).where(mine, ~live).values(outcome=ItemOutcome.GONE, applied_at=now),
        execution_options=plain,
    )
    # The facts the engine respects from now on, then the items they settle.
    session.execute(
        insert(ReviewRevocation).from_select(
            ["user_id", "connector_id", "item_id", "revoked_at", "revoked_by"],
            select(
                ReviewItem.user_id,
                ReviewItem.connector_id,
                ReviewItem.id,
                literal(now, ReviewRevocation.revoked_at.type),
                literal(origin.actor, String),
            ).where(unsettled, revoke),
        )
    )
    session.execute(
        update(ReviewItem)
        .where(unsettled, revoke)
        .values(outcome=ItemOutcome.REVOKED, applied_at=now),
        execution_options=plain,
    )
    session.execute(
        update(ReviewItem).where(unsettled).values(outcome=ItemOutcome.KEPT, applied_at=now),
        execution_options=plain,
    )

    users = list(
        session.scalars(
            select(ReviewItem.user_id)
            .where(mine, ReviewItem.outcome == ItemOutcome.REVOKED)
            .distinct()
        )
    )
    users.sort()
    applied = Origin(origin.actor, origin.source, f"access review {campaign.id}")
    revoked = 0
    for batch in engine.in_batches(users):
        revoked += len(engine.apply(session, batch, applied).revoked)
    left = session.scalar(
        select(func.count(ReviewItem.id))
        .join(Grant, Grant.id == ReviewItem.grant_id)
        .where(mine, ReviewItem.outcome == ItemOutcome.REVOKED, Grant.revoked_at.is_(None))
    )
    if left:  # the engine must have revoked every one; never report what did not happen
        raise RuntimeError(f"review campaign {campaign.id}: {left} revoked item(s) still live")

    before = campaign_state(campaign)
    campaign.state = CampaignState.CLOSED
    campaign.closed_at = now
    campaign.closed_by = origin.actor
    campaign.counts = {**tally(session, [campaign.id])[campaign.id], "grants_revoked": revoked}
    session.flush()
    audit.record(
        session,
        origin,
        [
            Entry(
                "review.closed",
                "review_campaign",
                str(campaign.id),
                user_id=campaign.subject_user_id,
                before={"state": before["state"]},
                after=campaign_state(campaign),
            )
        ],
    )
    return campaign


def tally(session: Session, campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    """Items per campaign: how many, approved, revoked, undecided, and (once closed) the
    outcomes: kept, revoked, gone."""
    counts: dict[int, dict[str, int]] = {
        cid: {"items": 0, "approved": 0, "revoke_decisions": 0, "undecided": 0}
        for cid in campaign_ids
    }
    if not campaign_ids:
        return counts
    rows = session.execute(
        select(
            ReviewItem.campaign_id,
            ReviewItem.decision,
            ReviewItem.outcome,
            func.count(ReviewItem.id),
        )
        .where(ReviewItem.campaign_id.in_(campaign_ids))
        .group_by(ReviewItem.campaign_id, ReviewItem.decision, ReviewItem.outcome)
    )
    names = {
        ReviewDecision.APPROVE: "approved",
        ReviewDecision.REVOKE: "revoke_decisions",
        None: "undecided",
    }
    for campaign_id, decision, outcome, count in rows:
        entry = counts[campaign_id]
        entry["items"] += count
        entry[names[decision]] += count
        if outcome is not None:
            key = f"outcome_{outcome}"
            entry[key] = entry.get(key, 0) + count
    return counts


# -- triggers -----------------------------------------------------------------------


def last_created(session: Session, trigger: CampaignTrigger) -> dt.datetime | None:
    """When the latest campaign of ``trigger`` was created (the schedule's memory)."""
    return session.scalar(
        select(func.max(ReviewCampaign.created_at)).where(ReviewCampaign.trigger == trigger)
    )


def on_role_change(
    session: Session,
    origin: Origin,
    user: User,
    changed: dict[str, tuple[Any, Any]],
    settings: Settings = DEFAULTS,
) -> ReviewCampaign | None:
    """A campaign over the grants of someone whose department or manager changed.

    Nothing when they hold no live grant (a new hire, a leaver). Deadline and
    no-response outcome are ``settings``' (PROVISIONING_REVIEW_DEADLINE_DAYS,
    PROVISIONING_REVIEW_NO_RESPONSE).
    """
    if not user.eligible:
        return None
    holds = session.scalar(
        select(Grant.id).where(Grant.user_id == user.id, Grant.revoked_at.is_(None)).limit(1)
    )
    if holds is None:
        return None
    days, no_response = settings.review_deadline_days, NoResponse(settings.review_no_response)
    now = utcnow()
    what = ", ".join(name.removesuffix("_id") for name in sorted(changed))
    return create_campaign(
        session,
        origin,
        name=f"Role change: {user.user_name} ({what})"[:200],
        trigger=CampaignTrigger.ROLE_CHANGE,
        deadline=now + dt.timedelta(days=days),
        no_response=no_response,
        subject_user_id=user.id,
        context={name: list(values) for name, values in sorted(changed.items())},
        now=now,
    )
