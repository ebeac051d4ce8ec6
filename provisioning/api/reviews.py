"""/api/v1/reviews: access review campaigns, their items, reviewers' decisions, closing."""

from __future__ import annotations

import datetime as dt

from flask import Response, current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.api import schemas
from provisioning.api.edge import (
    changes,
    database,
    fail,
    json_response,
    not_found,
    origin,
    page,
    route,
    settings,
    speaks_for,
    unprocessable,
)
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.entitlements.models import ReviewRevocation
from provisioning.identity import directory
from provisioning.reviews import campaigns
from provisioning.reviews.models import (
    CampaignState,
    CampaignTrigger,
    NoResponse,
    ReviewCampaign,
    ReviewItem,
)
from provisioning.tokens.credentials import Scope

READ = Scope.ADMIN_READ.value
WRITE = Scope.ADMIN_WRITE.value
TAG = "reviews"


def _out(session: Session, found: list[ReviewCampaign]) -> list[schemas.ReviewOut]:
    """The campaigns as answered: scope as slugs; counts live while open, settled once closed."""
    slugs = dict(session.execute(select(Connector.id, Connector.slug)).all())
    live = campaigns.tally(session, [c.id for c in found if c.state is CampaignState.OPEN])
    return [
        schemas.ReviewOut(
            id=c.id,
            url=f"/api/v1/reviews/{c.id}",
            name=c.name,
            trigger=c.trigger,
            connectors=None
            if c.connector_ids is None
            else [slugs.get(i, str(i)) for i in c.connector_ids],
            subject_user_id=c.subject_user_id,
            context=c.context,
            created_by=c.created_by,
            created_at=c.created_at,
            deadline=c.deadline,
            no_response=c.no_response,
            state=c.state,
            closed_at=c.closed_at,
            closed_by=c.closed_by,
            counts=live.get(c.id, c.counts),
        )
        for c in found
    ]


def _campaign(session: Session, review_id: int) -> ReviewCampaign:
    campaign = session.get(ReviewCampaign, review_id)
    if campaign is None:
        not_found(f"review campaign {review_id}")
    return campaign  # type: ignore[return-value]


@route("GET", "/reviews", READ, tag=TAG, ok={200: schemas.ReviewPage})
def list_reviews(query: schemas.ReviewQuery) -> Response:
    """Review campaigns by id, filtered by state and trigger."""
    statement = select(ReviewCampaign)
    if query.state is not None:
        statement = statement.where(ReviewCampaign.state == query.state)
    if query.trigger is not None:
        statement = statement.where(ReviewCampaign.trigger == query.trigger)
    with database().reader() as session:
        rows, cursor = page(
            session, statement, [ReviewCampaign.id], cursor=query.cursor, limit=query.limit
        )
        items = _out(session, [row[0] for row in rows])
    return json_response(schemas.ReviewPage(items=items, next_cursor=cursor))


@route(
    "POST",
    "/reviews",
    WRITE,
    tag=TAG,
    ok={201: schemas.ReviewOut},
    summary="Open a campaign now over the live grants of some connectors, or of all",
)
def create_review(body: schemas.ReviewIn) -> Response:
    settings = current_app.extensions["provisioning.settings"]
    now = utcnow()
    deadline = body.deadline or now + dt.timedelta(days=settings.review_deadline_days)
    if deadline <= now:
        unprocessable("the deadline must be in the future", "deadline")
    with database().transaction() as session:
        connector_ids = None
        if body.connectors is not None:
            found = dict(
                session.execute(
                    select(Connector.slug, Connector.id).where(Connector.slug.in_(body.connectors))
                ).all()
            )
            if unknown := sorted(set(body.connectors) - set(found)):
                unprocessable(f"no connector(s) {', '.join(unknown)}", "connectors")
            connector_ids = list(found.values())
        try:
            campaign = campaigns.create_campaign(
                session,
                origin(),
                name=body.name or f"Access review {now:%Y-%m-%d}",
                trigger=CampaignTrigger.MANUAL,
                deadline=deadline,
                no_response=body.no_response or NoResponse(settings.review_no_response),
                connector_ids=connector_ids,
                now=now,
            )
        except campaigns.ReviewError as exc:
            unprocessable(str(exc))
        (result,) = _out(session, [campaign])
    response = json_response(result, 201)
    response.headers["Location"] = result.url
    return response


@route(
    "GET", "/reviews/<int:review_id>", READ, tag=TAG, ok={200: schemas.ReviewOut}, problems=[404]
)
def get_review(path: schemas.ReviewPath) -> Response:
    with database().reader() as session:
        (result,) = _out(session, [_campaign(session, path.review_id)])
    return json_response(result)


def _item(item: ReviewItem, revocation: ReviewRevocation | None = None) -> schemas.ReviewItemOut:
    """The item as answered, with the lift of its revocation if one was lifted."""
    out = schemas.ReviewItemOut.model_validate(item, from_attributes=True)
    if revocation is not None and revocation.lifted_at is not None:
        out.lifted_at = revocation.lifted_at
        out.lifted_by = revocation.lifted_by
        out.lift_reason = revocation.lift_reason
    return out


@route(
    "GET",
    "/reviews/<int:review_id>/items",
    READ,
    tag=TAG,
    ok={200: schemas.ReviewItemPage},
    problems=[404],
)
def list_review_items(path: schemas.ReviewPath, query: schemas.ReviewItemQuery) -> Response:
    """A campaign's items by id, filtered by reviewer, decision, user and connector."""
    statement = (
        select(ReviewItem, ReviewRevocation)
        .outerjoin(ReviewRevocation, ReviewRevocation.item_id == ReviewItem.id)
        .where(ReviewItem.campaign_id == path.review_id)
    )
    if query.reviewer is not None:
        statement = statement.where(ReviewItem.reviewer == query.reviewer)
    if query.decision == "none":
        statement = statement.where(ReviewItem.decision.is_(None))
    elif query.decision is not None:
        statement = statement.where(ReviewItem.decision == query.decision)
    if query.user_id is not None:
        statement = statement.where(ReviewItem.user_id == query.user_id)
    with database().reader() as session:
        _campaign(session, path.review_id)
        if query.connector is not None:
            connector_id = session.scalar(
                select(Connector.id).where(Connector.slug == query.connector)
            )
            statement = statement.where(ReviewItem.connector_id == connector_id)
        rows, cursor = page(
            session, statement, [ReviewItem.id], cursor=query.cursor, limit=query.limit
        )
        items = [_item(item, revocation) for item, revocation in rows]
    return json_response(schemas.ReviewItemPage(items=items, next_cursor=cursor))


def _review_item(session: Session, path: schemas.ReviewItemPath) -> ReviewItem:
    """The item of the path's campaign, or 404."""
    item = session.get(ReviewItem, path.item_id)
    if item is None or item.campaign_id != path.review_id:
        not_found(f"item {path.item_id} in review campaign {path.review_id}")
    return item  # type: ignore[return-value]


@route(
    "POST",
    "/reviews/<int:review_id>/items/<int:item_id>/decision",
    WRITE,
    tag=TAG,
    ok={200: schemas.ReviewItemOut},
    problems=[403, 404, 409],
    summary="The item's reviewer approves or revokes it (a later decision replaces it until "
    "the campaign closes); an admin may override, saying why",
)
def decide_review_item(path: schemas.ReviewItemPath, body: schemas.ReviewDecisionIn) -> Response:
    with database().transaction() as session:
        item = _review_item(session, path)
        try:
            campaigns.decide(
                session,
                origin(),
                item,
                body.decision,
                body.comment,
                decider=speaks_for(session),
                override=body.override,
                fallback=directory.person(session, settings().review_fallback),
            )
        except campaigns.CampaignClosed as exc:
            fail(409, "Conflict", str(exc), "review-closed")
        except campaigns.NotReviewer as exc:
            fail(403, "Forbidden", str(exc), "not-reviewer")
        result = _item(item)
    return json_response(result)


@route(
    "POST",
    "/reviews/<int:review_id>/items/<int:item_id>/lift",
    WRITE,
    tag=TAG,
    ok={200: schemas.ReviewLiftOut},
    problems=[403, 404, 409],
    summary="An admin lifts the revocation a closed campaign applied to the item, saying "
    "why: the engine gives back what mappings and exceptions still justify",
)
def lift_review_revocation(path: schemas.ReviewItemPath, body: schemas.ReviewLiftIn) -> Response:
    with database().transaction() as session:
        item = _review_item(session, path)
        try:
            revocation, diff = campaigns.lift(
                session, origin(), item, body.reason, lifter=speaks_for(session)
            )
        except campaigns.NotLiftable as exc:
            fail(409, "Conflict", str(exc), "not-liftable")
        except campaigns.NotReviewer as exc:
            fail(403, "Forbidden", str(exc), "not-reviewer")
        except campaigns.ReviewError as exc:
            unprocessable(str(exc), "reason")
        result = schemas.ReviewLiftOut(
            **changes(session, diff, dry_run=False), item=_item(item, revocation)
        )
    return json_response(result)


@route(
    "POST",
    "/reviews/<int:review_id>/close",
    WRITE,
    tag=TAG,
    ok={200: schemas.ReviewOut},
    problems=[404, 409],
    summary="Close now: apply every decision, and the no-response outcome to the rest",
)
def close_review(path: schemas.ReviewPath) -> Response:
    with database().transaction() as session:
        _campaign(session, path.review_id)
        try:
            campaign = campaigns.close_campaign(session, origin(), path.review_id)
        except campaigns.CampaignClosed as exc:
            fail(409, "Conflict", str(exc), "review-closed")
        (result,) = _out(session, [campaign])
    return json_response(result)
