"""/api/v1/targets: downstream targets, the messages owed to them, and retrying dead letters."""

from __future__ import annotations

from flask import Response, current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning.api import schemas
from provisioning.api.edge import (
    check_if_match,
    database,
    etag_of,
    fail,
    found,
    json_response,
    listing,
    origin,
    route,
    unprocessable,
)
from provisioning.delivery import outbox, targets
from provisioning.delivery.egress import Egress
from provisioning.delivery.models import MessageState, OutboxMessage, Target
from provisioning.settings import Settings
from provisioning.tokens.credentials import Scope

READ = Scope.ADMIN_READ.value
WRITE = Scope.ADMIN_WRITE.value
TAG = "targets"


def _out(session: Session, target: Target) -> schemas.TargetOut:
    counts = dict(
        session.execute(
            select(OutboxMessage.state, func.count())
            .where(
                OutboxMessage.target_id == target.id, OutboxMessage.state != MessageState.DELIVERED
            )
            .group_by(OutboxMessage.state)
        ).all()
    )
    oldest = session.scalar(
        select(func.min(OutboxMessage.created_at)).where(
            OutboxMessage.target_id == target.id, OutboxMessage.state == MessageState.PENDING
        )
    )
    described = targets.describe(session, target)
    return schemas.TargetOut(
        id=target.id,
        created_at=target.created_at,
        updated_at=target.updated_at,
        pending=counts.get(MessageState.PENDING, 0),
        dead=counts.get(MessageState.DEAD, 0),
        oldest_pending_at=oldest,
        **described,
    )


def _answer(session: Session, target: Target, status: int = 200) -> Response:
    out = _out(session, target)
    response = json_response(out, status=status, etag=etag_of(out))
    if status == 201:
        response.headers["Location"] = f"/api/v1/targets/{target.id}"
    return response


def _refused(exc: targets.TargetError) -> None:
    if exc.field == "name":
        fail(409, "Conflict", str(exc), "conflict")
    unprocessable(str(exc), exc.field)


def _checked_url(url: str) -> targets.CheckedUrl:
    """The URL, checked against the egress policy before any transaction (it resolves)."""
    settings: Settings = current_app.extensions["provisioning.settings"]
    try:
        return targets.check_url(url, Egress(settings.delivery_allowed_network_list))
    except targets.TargetError as exc:
        _refused(exc)
        raise


@route("GET", "/targets", READ, tag=TAG, ok={200: schemas.TargetPage})
def list_targets(query: schemas.PageQuery) -> Response:
    """Every target, with how many messages it still owes and its dead letters."""
    with database().reader() as session:
        return listing(
            session,
            select(Target),
            [Target.id],
            query,
            schemas.TargetPage,
            lambda target: _out(session, target),
        )


@route(
    "POST",
    "/targets",
    WRITE,
    tag=TAG,
    ok={201: schemas.TargetOut},
    problems=[409],
    summary="Add a webhook or outbound SCIM target; it hears of every change from now on",
)
def create_target(body: schemas.TargetIn) -> Response:
    settings: Settings = current_app.extensions["provisioning.settings"]
    url = _checked_url(body.url)
    with database().transaction() as session:
        try:
            target = targets.create(
                session,
                origin(),
                name=body.name,
                kind=body.kind,
                url=url,
                secret=body.secret,
                connectors=body.connectors,
                enabled=body.enabled,
                max_attempts=body.max_attempts or settings.delivery_max_attempts,
            )
        except targets.TargetError as exc:
            _refused(exc)
        return _answer(session, target, 201)


@route(
    "GET", "/targets/<int:target_id>", READ, tag=TAG, ok={200: schemas.TargetOut}, problems=[404]
)
def get_target(path: schemas.TargetPath) -> Response:
    with database().reader() as session:
        return _answer(session, found(session, Target, path.target_id, "target"))


@route(
    "PATCH",
    "/targets/<int:target_id>",
    WRITE,
    tag=TAG,
    ok={200: schemas.TargetOut},
    problems=[404, 409, 412],
    summary="Change a target (disable to pause its delivery); If-Match guards lost updates",
)
def update_target(path: schemas.TargetPath, body: schemas.TargetPatch) -> Response:
    changes = body.model_dump(exclude_unset=True)
    if "url" in changes:
        changes["url"] = _checked_url(changes["url"])
    with database().transaction() as session:
        target = found(session, Target, path.target_id, "target", lock=True)
        check_if_match(etag_of(_out(session, target)))
        try:
            targets.update(session, origin(), target, changes)
        except targets.TargetError as exc:
            _refused(exc)
        return _answer(session, target)


@route(
    "DELETE",
    "/targets/<int:target_id>",
    WRITE,
    tag=TAG,
    ok={204: None},
    problems=[404, 409, 412],
    summary="Remove a target; refused while it is owed messages unless discard_undelivered",
)
def delete_target(path: schemas.TargetPath, query: schemas.TargetDeleteQuery) -> Response:
    with database().transaction() as session:
        target = found(session, Target, path.target_id, "target", lock=True)
        check_if_match(etag_of(_out(session, target)))
        try:
            targets.delete(session, origin(), target, discard=query.discard_undelivered)
        except targets.TargetError as exc:
            fail(409, "Conflict", str(exc), "undelivered-messages")
    return Response(status=204)


@route(
    "GET",
    "/targets/<int:target_id>/messages",
    READ,
    tag=TAG,
    ok={200: schemas.MessagePage},
    problems=[404],
)
def list_messages(path: schemas.TargetPath, query: schemas.MessageQuery) -> Response:
    """The target's outbox messages in delivery order, optionally in one state (dead letters)."""
    with database().reader() as session:
        found(session, Target, path.target_id, "target")
        statement = select(OutboxMessage).where(OutboxMessage.target_id == path.target_id)
        if query.state is not None:
            statement = statement.where(OutboxMessage.state == query.state)
        return listing(
            session,
            statement,
            [OutboxMessage.id],
            query,
            schemas.MessagePage,
            lambda message: schemas.MessageOut.model_validate(message, from_attributes=True),
        )


@route(
    "POST",
    "/targets/<int:target_id>/retry",
    WRITE,
    tag=TAG,
    ok={200: schemas.RetryOut},
    problems=[404],
    summary="Put dead letters back in line (all, or those named), in their original order",
)
def retry_dead_letters(path: schemas.TargetPath, body: schemas.RetryIn) -> Response:
    with database().transaction() as session:
        found(session, Target, path.target_id, "target", lock=True)
        retried = outbox.retry_dead(
            session, origin(), target_id=path.target_id, message_ids=body.message_ids
        )
    return json_response(schemas.RetryOut(retried=retried))
