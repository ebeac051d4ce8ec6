"""/api/v1/requests: people ask for connectors, approvers decide, requesters cancel; policies."""

from __future__ import annotations

from flask import Response
from flask import request as flask_request
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.api import schemas
from provisioning.api.connectors import READ, WRITE
from provisioning.api.edge import (
    PREFIX,
    caller,
    database,
    fail,
    json_response,
    not_found,
    origin,
    page,
    person,
    route,
    unprocessable,
)
from provisioning.connectors.models import Connector
from provisioning.identity.models import User
from provisioning.requests import idempotency, workflow
from provisioning.requests.models import AccessRequest, RequestKind, RequestPolicy, RequestStep
from provisioning.tokens.credentials import Scope

TAG = "requests"
ASK = Scope.REQUESTS_WRITE.value

# RequestError.kind -> (status, problem type)
_PROBLEMS = {
    "conflict": (409, "request-conflict"),
    "separation": (409, "separation-of-duties"),
    "forbidden": (403, "not-allowed"),
    "not-found": (404, "not-found"),
}
_TITLE = {403: "Forbidden", 404: "Not Found", 409: "Conflict"}


def _refused(exc: workflow.RequestError) -> None:
    if exc.kind not in _PROBLEMS:
        unprocessable(str(exc), exc.field)
    status, kind = _PROBLEMS[exc.kind]
    fail(status, _TITLE[status], str(exc), kind)


def _connector(session: Session, slug: str, field: str | None = None) -> Connector:
    connector = session.scalar(select(Connector).where(Connector.slug == slug))
    if connector is None:
        if field:
            unprocessable(f"no connector {slug}", field)
        not_found(f"connector {slug}")
    return connector


def _out(session: Session, request: AccessRequest) -> schemas.AccessRequestOut:
    slug = session.scalar(select(Connector.slug).where(Connector.id == request.connector_id))
    steps = session.scalars(
        select(RequestStep).where(RequestStep.request_id == request.id).order_by(RequestStep.id)
    )
    return schemas.AccessRequestOut(
        id=request.id,
        url=f"{PREFIX}/requests/{request.id}",
        user_id=request.user_id,
        requested_by=request.requested_by,
        connector=slug or "",
        access_level=request.access_level,
        actions=request.actions,
        justification=request.justification,
        duration_days=request.duration_days,
        approvers=request.approvers,
        stage=request.stage,
        state=request.state,
        deadline=request.deadline,
        created_at=request.created_at,
        closed_at=request.closed_at,
        closed_by=request.closed_by,
        granted_at=request.granted_at,
        expires_at=request.expires_at,
        kind=request.kind,
        call=_call(request),
        steps=[
            schemas.RequestStepOut(
                stage=s.stage,
                role=s.role,
                approver=s.approver,
                decision=s.decision,
                comment=s.comment,
                decided_at=s.decided_at,
            )
            for s in steps
        ],
    )


def _call(request: AccessRequest) -> schemas.CallApprovalOut | None:
    if request.kind != RequestKind.CALL or request.call is None:
        return None
    return schemas.CallApprovalOut(
        action=request.call.get("action"),
        arguments_digest=request.call.get("arguments_digest"),
        policy_version=request.call.get("policy_version"),
        evaluation_id=request.call.get("evaluation_id"),
        task_id=request.task_id,
        approved_until=request.approved_until,
        items=[
            schemas.CallItemOut(
                action=i.get("action"),
                arguments_digest=i.get("arguments_digest"),
                policy_version=i.get("policy_version"),
                evaluation_id=i.get("evaluation_id"),
            )
            for i in request.call["items"]
        ]
        if isinstance(request.call.get("items"), list)
        else None,
    )


# -- policies -----------------------------------------------------------------------


def _policy_out(policy: RequestPolicy, slug: str) -> schemas.RequestPolicyOut:
    return schemas.RequestPolicyOut(
        connector=slug,
        approvers=policy.approvers,
        max_days=policy.max_days,
        decide_within_days=policy.decide_within_days,
        updated_by=policy.updated_by,
        updated_at=policy.updated_at,
    )


@route("GET", "/request-policies", READ, tag=TAG, ok={200: schemas.RequestPolicyPage})
def list_request_policies() -> Response:
    """The connectors people may request, each with its approval chain and bounds."""
    with database().reader() as session:
        rows = session.execute(
            select(RequestPolicy, Connector.slug)
            .join(Connector, Connector.id == RequestPolicy.connector_id)
            .order_by(Connector.slug)
        ).all()
        items = [_policy_out(policy, slug) for policy, slug in rows]
    return json_response(schemas.RequestPolicyPage(items=items))


@route(
    "PUT",
    "/request-policies/<slug>",
    WRITE,
    tag=TAG,
    ok={200: schemas.RequestPolicyOut},
    problems=[404],
    summary="Make a connector requestable: its approval chain and longest duration",
)
def put_request_policy(path: schemas.ConnectorPath, body: schemas.RequestPolicyIn) -> Response:
    with database().transaction() as session:
        connector = _connector(session, path.slug)
        try:
            policy = workflow.set_policy(
                session,
                origin(),
                connector,
                approvers=[str(a) for a in body.approvers],
                max_days=body.max_days,
                decide_within_days=body.decide_within_days,
            )
        except workflow.RequestError as exc:
            _refused(exc)
        result = _policy_out(policy, connector.slug)
    return json_response(result)


@route(
    "DELETE",
    "/request-policies/<slug>",
    WRITE,
    tag=TAG,
    ok={204: None},
    problems=[404, 409],
    summary="Stop taking requests for a connector (requests made run their course)",
)
def delete_request_policy(path: schemas.ConnectorPath) -> Response:
    with database().transaction() as session:
        connector = _connector(session, path.slug)
        try:
            workflow.remove_policy(session, origin(), connector)
        except workflow.RequestError as exc:
            _refused(exc)
    return Response(status=204)


# -- requests -----------------------------------------------------------------------


@route("GET", "/requests", READ, tag=TAG, ok={200: schemas.AccessRequestPage})
def list_requests(query: schemas.AccessRequestQuery) -> Response:
    """Access requests by id, filtered by state, person and connector."""
    statement = select(AccessRequest)
    if query.state is not None:
        statement = statement.where(AccessRequest.state == query.state)
    if query.user_id is not None:
        statement = statement.where(AccessRequest.user_id == query.user_id)
    if query.connector is not None:
        statement = statement.join(Connector, Connector.id == AccessRequest.connector_id).where(
            Connector.slug == query.connector
        )
    with database().reader() as session:
        rows, cursor = page(
            session, statement, [AccessRequest.id], cursor=query.cursor, limit=query.limit
        )
        items = [_out(session, row[0]) for row in rows]
    return json_response(schemas.AccessRequestPage(items=items, next_cursor=cursor))


@route(
    "GET",
    "/requests/<int:request_id>",
    READ,
    tag=TAG,
    ok={200: schemas.AccessRequestOut},
    problems=[404],
)
def get_request(path: schemas.AccessRequestPath) -> Response:
    with database().reader() as session:
        request = session.get(AccessRequest, path.request_id)
        if request is None:
            not_found(f"access request {path.request_id}")
        result = _out(session, request)
    return json_response(result)


@route(
    "POST",
    "/requests",
    ASK,
    tag=TAG,
    ok={201: schemas.AccessRequestOut},
    problems=[409],
    summary="Ask for a connector for a time (for yourself, or for a report of yours)",
)
def create_request(body: schemas.AccessRequestIn) -> Response:
    """With an ``Idempotency-Key``, a retry with the same body answers the request made the
    first time; the same key with another body is 409 ``duplicate-request``."""
    key = idempotency.key(caller().name, _idempotency_key())
    sent = idempotency.digest(body.model_dump(mode="json", exclude_unset=True))
    return idempotency.settled(lambda: _create_request(body, key, sent))


def _create_request(body: schemas.AccessRequestIn, key: str | None, sent: str) -> Response:
    with database().transaction() as session:
        requester = person(session)
        user = requester
        if body.user_id is not None and body.user_id != requester.id:
            user = session.get(User, body.user_id)
            if user is None:
                unprocessable(f"no user {body.user_id}", "user_id")
        connector = _connector(session, body.connector, "connector")
        try:
            request = workflow.create(
                session,
                origin(),
                requester,
                user,
                connector,
                body.access_level,
                justification=body.justification,
                duration_days=body.duration_days,
                actions=body.actions,
                idempotency_key=key,
                idempotency_digest=sent if key is not None else None,
            )
        except idempotency.Reused as exc:
            fail(409, "Conflict", str(exc), "duplicate-request")
        except workflow.RequestError as exc:
            _refused(exc)
        result = _out(session, request)
    return _created(result)


def _created(result: schemas.AccessRequestOut) -> Response:
    response = json_response(result, 201)
    response.headers["Location"] = result.url
    return response


def _idempotency_key() -> str | None:
    value = flask_request.headers.get("Idempotency-Key")
    if value is not None and not 1 <= len(value) <= idempotency.MAX_KEY:
        unprocessable(
            f"Idempotency-Key must be 1 to {idempotency.MAX_KEY} characters", "Idempotency-Key"
        )
    return value


@route(
    "POST",
    "/requests/<int:request_id>/decision",
    ASK,
    tag=TAG,
    ok={200: schemas.AccessRequestOut},
    problems=[404, 409],
    summary="The approver of the request's current stage approves or denies it",
)
def decide_request(path: schemas.AccessRequestPath, body: schemas.RequestDecisionIn) -> Response:
    with database().transaction() as session:
        approver = person(session)
        try:
            request, _ = workflow.decide(
                session, origin(), path.request_id, approver, body.decision, body.comment
            )
        except workflow.RequestError as exc:
            _refused(exc)
        result = _out(session, request)
    return json_response(result)


@route(
    "POST",
    "/requests/<int:request_id>/cancel",
    ASK,
    tag=TAG,
    ok={200: schemas.AccessRequestOut},
    problems=[404, 409],
    summary="Who asked withdraws a pending request",
)
def cancel_request(path: schemas.AccessRequestPath, body: schemas.RequestCancelIn) -> Response:
    with database().transaction() as session:
        asker = person(session)
        try:
            request = workflow.cancel(session, origin(), path.request_id, asker, body.reason)
        except workflow.RequestError as exc:
            _refused(exc)
        result = _out(session, request)
    return json_response(result)
