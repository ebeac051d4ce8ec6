"""/api/v1/grants and /api/v1/exceptions: materialised access, and access outside any group."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Response
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from provisioning.api import schemas
from provisioning.api.connectors import READ, WRITE
from provisioning.api.edge import (
    changes,
    database,
    fail,
    found,
    json_response,
    not_found,
    origin,
    page,
    route,
    unprocessable,
)
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.entitlements import exceptions
from provisioning.entitlements import mappings as domain
from provisioning.entitlements.models import Grant, ManualException
from provisioning.identity.models import User

TAG = "grants"


@route("GET", "/grants", READ, tag=TAG, ok={200: schemas.GrantPage})
def list_grants(query: schemas.GrantQuery) -> Response:
    """Grants by id, filtered by user, connector, state and staleness."""
    statement = (
        select(Grant, User.user_name, Connector.slug)
        .join(User, User.id == Grant.user_id)
        .join(Connector, Connector.id == Grant.connector_id)
    )
    if query.user_id is not None:
        statement = statement.where(Grant.user_id == query.user_id)
    if query.connector is not None:
        statement = statement.where(Connector.slug == query.connector)
    if query.state == "live":
        statement = statement.where(Grant.revoked_at.is_(None))
    elif query.state == "revoked":
        statement = statement.where(Grant.revoked_at.is_not(None))
    if query.unused_days is not None:
        cutoff = utcnow() - dt.timedelta(days=query.unused_days)
        statement = statement.where(
            or_(
                Grant.last_used_at < cutoff,
                and_(Grant.last_used_at.is_(None), Grant.granted_at < cutoff),
            )
        )
    with database().reader() as session:
        rows, cursor = page(
            session,
            statement,
            [Grant.id],
            cursor=query.cursor,
            limit=query.limit,
        )
        items = [
            schemas.GrantOut(
                id=grant.id,
                user_id=grant.user_id,
                user_name=user_name,
                connector=slug,
                access_level=grant.access_level,
                granted_at=grant.granted_at,
                last_used_at=grant.last_used_at,
                last_used_agent=grant.last_used_agent,
                last_evaluation_id=grant.last_evaluation_id,
                revoked_at=grant.revoked_at,
                revoke_reason=grant.revoke_reason,
            )
            for grant, user_name, slug in rows
        ]
    return json_response(schemas.GrantPage(items=items, next_cursor=cursor))


def exception_out(row: Any) -> schemas.ExceptionOut:
    """One row of :func:`provisioning.entitlements.exceptions.listed`, as answered."""
    exception, user_name, slug, state, withdrawn = row
    return schemas.ExceptionOut(
        id=exception.id,
        user_id=exception.user_id,
        user_name=user_name,
        connector=slug,
        access_level=exception.access_level,
        actions=exception.actions,
        justification=exception.justification,
        expires_at=exception.expires_at,
        created_by=exception.created_by,
        created_at=exception.created_at,
        revoked_at=exception.revoked_at,
        state=state,
        withdrawn=withdrawn,
    )


def _exception(session: Session, exception_id: int) -> schemas.ExceptionOut:
    """The exception as answered, or 404."""
    everything = exceptions.ExceptionFilter(state=None)
    row = session.execute(
        exceptions.listed(everything, utcnow()).where(ManualException.id == exception_id)
    ).first()
    if row is None:
        not_found(f"exception {exception_id}")
    return exception_out(row)


@route("GET", "/exceptions", READ, tag=TAG, ok={200: schemas.ExceptionPage})
def list_exceptions(query: schemas.ExceptionQuery) -> Response:
    """Manual exceptions by id: active ones unless ``state`` says otherwise, filtered by
    person, connector, expiry window and author."""
    if (
        query.expires_before is not None
        and query.expires_after is not None
        and query.expires_after >= query.expires_before
    ):
        unprocessable("expires_after must be earlier than expires_before", "expires_after")
    criteria = exceptions.ExceptionFilter(
        user=query.user,
        user_id=query.user_id,
        connector=query.connector,
        state=None if query.state == "all" else exceptions.ExceptionState(query.state),
        expires_before=query.expires_before,
        expires_after=query.expires_after,
        created_by=query.created_by,
    )
    with database().reader() as session:
        rows, cursor = page(
            session,
            exceptions.listed(criteria, utcnow()),
            [ManualException.id],
            cursor=query.cursor,
            limit=query.limit,
        )
        items = [exception_out(row) for row in rows]
    return json_response(schemas.ExceptionPage(items=items, next_cursor=cursor))


@route(
    "GET",
    "/exceptions/<int:exception_id>",
    READ,
    tag=TAG,
    ok={200: schemas.ExceptionOut},
    problems=[404],
)
def get_exception(path: schemas.ExceptionPath) -> Response:
    with database().reader() as session:
        result = _exception(session, path.exception_id)
    return json_response(result)


@route(
    "POST",
    "/exceptions",
    WRITE,
    tag=TAG,
    ok={201: schemas.ExceptionResult},
    summary="Grant one person a connector outside any group (justification and expiry required)",
)
def create_exception(body: schemas.ExceptionIn) -> Response:
    with database().transaction() as session:
        user = session.get(User, body.user_id)
        if user is None:
            unprocessable(f"no user {body.user_id}", "user_id")
        connector = session.scalar(select(Connector).where(Connector.slug == body.connector))
        if connector is None:
            unprocessable(f"no connector {body.connector}", "connector")
        if body.expires_at <= utcnow():
            unprocessable("expires_at must be in the future", "expires_at")
        try:
            exception, diff = domain.create_exception(
                session,
                origin(),
                user,
                connector,
                body.access_level,
                justification=body.justification,
                expires_at=body.expires_at,
                actions=body.actions,
            )
        except domain.SeparationConflict as exc:
            fail(409, "Conflict", str(exc), "separation-of-duties")
        except domain.MappingError as exc:
            unprocessable(str(exc), exc.field)
        result = schemas.ExceptionResult(
            **changes(session, diff, dry_run=False),
            exception=_exception(session, exception.id),
        )
    return json_response(result, 201)


@route(
    "POST",
    "/exceptions/<int:exception_id>/revoke",
    WRITE,
    tag=TAG,
    ok={200: schemas.ExceptionResult},
    problems=[404, 409],
    summary="End an exception now; what only it justified is revoked",
)
def revoke_exception(path: schemas.ExceptionPath, body: schemas.RevokeIn) -> Response:
    with database().transaction() as session:
        exception = found(session, ManualException, path.exception_id, "exception")
        if exception.revoked_at is not None:
            fail(409, "Conflict", f"exception {exception.id} is already revoked", "conflict")
        diff = domain.revoke_exception(session, origin(), exception, reason=body.reason)
        result = schemas.ExceptionResult(
            **changes(session, diff, dry_run=False), exception=_exception(session, exception.id)
        )
    return json_response(result)
