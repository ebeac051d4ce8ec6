"""Expiry: time-bound sources of access (mappings, exceptions, requests) stop justifying it on time.

The engine already ignores an expired mapping or exception; :func:`expire`
finds the users still holding a grant that only such a one justified, and
applies the engine to them (revocation audited like any other).
:func:`remind` tells the targets, once, of what expires soon.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from provisioning.audit.log import Origin
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.delivery import outbox
from provisioning.entitlements import engine
from provisioning.entitlements.models import Grant, ManualException, Mapping
from provisioning.entitlements.sources import SOURCES
from provisioning.identity.models import Group, Membership
from provisioning.requests.models import AccessRequest, RequestState


def expire(session: Session, origin: Origin) -> dict[str, int]:
    """Apply the engine to everyone an expired source of access may still be granting."""
    now = utcnow()
    users: set[Any] = set()
    for source in SOURCES:
        held = exists().where(
            Grant.user_id == source.user_id,
            Grant.connector_id == source.connector_id,
            Grant.revoked_at.is_(None),
        )
        statement = source.select(source.user_id).where(*source.ended(now), held).distinct()
        users.update(session.scalars(statement))
    if not users:
        return {"users": 0, "revoked": 0, "updated": 0}
    diff = engine.apply(session, engine.Affected.users(*sorted(users)), origin)
    return {"users": len(users), "revoked": len(diff.revoked), "updated": len(diff.updated)}


def remind(session: Session, within: dt.timedelta) -> dict[str, int]:
    """Tell the targets, once each, of exceptions, approved access requests and mappings
    expiring within ``within``.

    An exception is one user's (``exception.expiring`` in that user's order), and so
    is an approved request (``request.expiring``);
    a mapping is a group's (``mapping.expiring``, with how many members it covers).
    """
    now = utcnow()
    horizon = now + within
    exceptions = session.execute(
        select(ManualException, Connector.slug)
        .join(Connector, Connector.id == ManualException.connector_id)
        .where(
            ManualException.revoked_at.is_(None),
            ManualException.reminded_at.is_(None),
            ManualException.expires_at > now,
            ManualException.expires_at <= horizon,
        )
    ).all()
    mappings = session.execute(
        select(Mapping, Connector.slug, Group.display_name)
        .join(Connector, Connector.id == Mapping.connector_id)
        .join(Group, Group.id == Mapping.group_id)
        .where(
            Mapping.reminded_at.is_(None),
            Mapping.expires_at > now,
            Mapping.expires_at <= horizon,
        )
    ).all()
    requests = session.execute(
        select(AccessRequest, Connector.slug)
        .join(Connector, Connector.id == AccessRequest.connector_id)
        .where(
            AccessRequest.state == RequestState.APPROVED,
            AccessRequest.reminded_at.is_(None),
            AccessRequest.expires_at > now,
            AccessRequest.expires_at <= horizon,
        )
    ).all()
    events: list[outbox.Event] = []
    for request, slug in requests:
        about = {
            "request": {
                "id": request.id,
                "connector": slug,
                "access_level": str(request.access_level),
                "expires_at": request.expires_at.isoformat(),
                "justification": request.justification,
            }
        }
        events.append(
            outbox.Event("request.expiring", request.user_id, about, request.connector_id)
        )
    for exception, slug in exceptions:
        data: dict[str, Any] = {
            "exception": {
                "id": exception.id,
                "connector": slug,
                "access_level": str(exception.access_level),
                "expires_at": exception.expires_at.isoformat(),
                "justification": exception.justification,
            }
        }
        events.append(
            outbox.Event("exception.expiring", exception.user_id, data, exception.connector_id)
        )
    for mapping, slug, group_name in mappings:
        members = session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.group_id == mapping.group_id, Membership.present.is_(True))
        )
        data = {
            "mapping": {
                "id": mapping.id,
                "group": group_name,
                "group_id": str(mapping.group_id),
                "connector": slug,
                "access_level": str(mapping.access_level),
                "expires_at": mapping.expires_at.isoformat(),
                "members": members,
            }
        }
        events.append(outbox.Event("mapping.expiring", outbox.SERVICE, data, mapping.connector_id))
    outbox.enqueue(session, events)
    for model, rows in (
        (ManualException, exceptions),
        (Mapping, mappings),
        (AccessRequest, requests),
    ):
        ids = [row[0].id for row in rows]
        if ids:
            session.execute(
                update(model)
                .where(model.id.in_(ids))
                .values(reminded_at=now)
                .execution_options(synchronize_session=False)
            )
    return {"exceptions": len(exceptions), "mappings": len(mappings), "requests": len(requests)}
