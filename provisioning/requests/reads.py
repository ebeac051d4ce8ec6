"""Reading access requests as a person sees them: what awaits their decision, what they asked."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.identity.models import User
from provisioning.requests.models import (
    AccessRequest,
    Approver,
    RequestPolicy,
    RequestState,
    RequestStep,
)
from provisioning.requests.workflow import approver_of

LIMIT = 200


def awaiting(session: Session, person: User) -> list[tuple[AccessRequest, Connector]]:
    """Pending requests (before their deadline) whose current stage ``person`` decides, as
    :func:`~provisioning.requests.workflow.approver_of` names that stage's approver; oldest
    first. A request ``person`` asked for, or that is for them, never awaits them."""
    rows = session.execute(
        select(AccessRequest, Connector)
        .join(Connector, Connector.id == AccessRequest.connector_id)
        .where(
            AccessRequest.state == RequestState.PENDING,
            AccessRequest.deadline > utcnow(),
            AccessRequest.user_id != person.id,
            AccessRequest.requested_by_id != person.id,
        )
        .order_by(AccessRequest.id)
    ).all()
    # One approver per connector (owner stages) and per person asking (manager stages).
    known: dict[tuple[str, object], User | None] = {}
    mine = []
    for request, connector in rows:
        role = Approver(request.approvers[request.stage])
        key = (role, connector.id if role is Approver.OWNER else request.user_id)
        if key not in known:
            known[key] = approver_of(session, role, request, connector)
        approver = known[key]
        if approver is not None and approver.id == person.id:
            mine.append((request, connector))
            if len(mine) == LIMIT:
                break
    return mine


def asked_by(session: Session, person: User) -> list[tuple[AccessRequest, Connector]]:
    """The requests ``person`` made or that are for them, newest first."""
    return list(
        session.execute(
            select(AccessRequest, Connector)
            .join(Connector, Connector.id == AccessRequest.connector_id)
            .where(
                or_(AccessRequest.requested_by_id == person.id, AccessRequest.user_id == person.id)
            )
            .order_by(AccessRequest.id.desc())
            .limit(LIMIT)
        ).all()
    )


def steps(session: Session, request_ids: list[int]) -> dict[int, list[RequestStep]]:
    """Each request's decisions so far, in order."""
    found: dict[int, list[RequestStep]] = {i: [] for i in request_ids}
    if request_ids:
        for step in session.scalars(
            select(RequestStep)
            .where(RequestStep.request_id.in_(request_ids))
            .order_by(RequestStep.id)
        ):
            found[step.request_id].append(step)
    return found


def requestable(session: Session) -> list[tuple[Connector, RequestPolicy]]:
    """The enabled connectors that take requests, with their policy, by slug."""
    return list(
        session.execute(
            select(Connector, RequestPolicy)
            .join(RequestPolicy, RequestPolicy.connector_id == Connector.id)
            .where(Connector.enabled.is_(True))
            .order_by(Connector.slug)
        ).all()
    )
