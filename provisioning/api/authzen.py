"""The OpenID AuthZEN Authorization API 1.0 at /access/v1 and its PDP metadata: thin
handlers over :mod:`provisioning.entitlements.authzen`, authenticated like /api/v1/decisions.

Every answer echoes the request's ``X-Request-ID`` (as every answer of the service does:
provisioning/web/logs.py). A request the API cannot read is a
400 in problem+json whose ``detail`` is the error message (a body not sent as JSON too:
the specification asks 400 there, not 415); nothing is recorded for it.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, current_app, json, request
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.models import Schema
from flask_openapi3.utils import get_model_schema
from pydantic import BaseModel, ConfigDict, Field

from provisioning.api.edge import (
    PROBLEM_TYPE,
    SELF_VALIDATED,
    authenticate,
    caller,
    database,
    origin,
    problem_response,
)
from provisioning.connectors.models import Interface
from provisioning.delivery.egress import Egress
from provisioning.entitlements import approvals, authzen
from provisioning.entitlements.decisions import LastUseRecorder
from provisioning.requests import callbacks, calls, idempotency, workflow
from provisioning.tokens.credentials import Scope
from provisioning.tokens.secrets import APPROVAL_BINDINGS, shared
from provisioning.web import bodies
from provisioning.web.problems import problem

CHECK = Scope.DECISIONS_CHECK.value
PREFIX = "/access/v1"
METADATA = "/.well-known/authzen-configuration"
# The metadata parameter naming each endpoint, and its path.
ENDPOINTS = {
    "access_evaluation_endpoint": f"{PREFIX}/evaluation",
    "access_evaluations_endpoint": f"{PREFIX}/evaluations",
    "search_subject_endpoint": f"{PREFIX}/search/subject",
    "search_resource_endpoint": f"{PREFIX}/search/resource",
    "search_action_endpoint": f"{PREFIX}/search/action",
    # The draft Access Request & Approval profile: where a requestable denial is submitted.
    "access_request_endpoint": f"{PREFIX}/requests",
}

access = APIBlueprint("authzen", __name__)
log = logging.getLogger("provisioning.authzen")


# -- the OpenAPI document's shapes (the handlers read bodies themselves: 400, not 422) ------


class _Open(BaseModel):
    """Unknown members are ignored, as the specification requires of receivers."""

    model_config = ConfigDict(extra="allow")


class AuthzenEntity(_Open):
    """A subject or a resource: a person (``user``, ``identity``), a ``connector``, a
    connector's own resource type, a ``tool`` or an ``mcp_server`` (docs/authzen.md)."""

    type: str = Field(min_length=1, max_length=authzen.MAX_TEXT)
    id: str = Field(min_length=1, max_length=authzen.MAX_TEXT)
    properties: dict[str, Any] | None = None


class SearchedEntity(_Open):
    """The entity searched for: its ``id`` is what the search finds, and is ignored."""

    type: str = Field(min_length=1, max_length=authzen.MAX_TEXT)
    id: str | None = None
    properties: dict[str, Any] | None = None


class AuthzenAction(_Open):
    name: str = Field(min_length=1, max_length=authzen.MAX_TEXT)
    properties: dict[str, Any] | None = None


class EvaluationRequest(_Open):
    subject: AuthzenEntity
    action: AuthzenAction
    resource: AuthzenEntity
    context: dict[str, Any] | None = Field(
        None, description="`interface` (web, mobile, desktop, code) and `agent` are read"
    )


class EvaluationItem(_Open):
    """One evaluation of a batch: each entity given whole, or taken from the defaults."""

    subject: AuthzenEntity | None = None
    action: AuthzenAction | None = None
    resource: AuthzenEntity | None = None
    context: dict[str, Any] | None = None


class EvaluationsOptions(_Open):
    evaluations_semantic: str = Field(
        "execute_all", pattern="^(execute_all|deny_on_first_deny|permit_on_first_permit)$"
    )


class EvaluationsRequest(_Open):
    """Defaults (``subject``, ``action``, ``resource``, ``context``) and up to
    MAX_EVALUATIONS evaluations; without evaluations, a single Access Evaluation."""

    subject: AuthzenEntity | None = None
    action: AuthzenAction | None = None
    resource: AuthzenEntity | None = None
    context: dict[str, Any] | None = None
    evaluations: list[EvaluationItem] | None = Field(None, max_length=authzen.MAX_EVALUATIONS)
    options: EvaluationsOptions | None = None


class EvaluationError(BaseModel):
    status: int
    message: str


class ApprovalRequired(BaseModel):
    """What the enforcement point must do before a ``needs_approval`` call may go."""

    type: str
    by: str
    connector: str | None
    action: str | None


class DecisionContext(BaseModel):
    evaluation_id: str
    reason: str = Field(description="a code: allow, needs_approval, blocked, no_grant, ...")
    outcome: str = Field(description="the decision of /api/v1/decisions")
    message: str
    error: EvaluationError | None = None
    approval: ApprovalRequired | None = None


class AuthzenDecision(BaseModel):
    decision: bool = Field(description="true only for allow")
    context: DecisionContext


class EvaluationsResponse(BaseModel):
    """The decisions in request order; a request without evaluations is answered as a
    single evaluation (``decision`` and ``context``)."""

    evaluations: list[AuthzenDecision] | None = None
    decision: bool | None = None
    context: DecisionContext | None = None


class SearchPage(_Open):
    token: str | None = None
    limit: int | None = Field(None, ge=1, le=authzen.MAX_PAGE)


class _SearchRequest(_Open):
    context: dict[str, Any] | None = None
    page: SearchPage | None = None


class SubjectSearchRequest(_SearchRequest):
    subject: SearchedEntity
    action: AuthzenAction
    resource: AuthzenEntity


class ResourceSearchRequest(_SearchRequest):
    subject: AuthzenEntity
    action: AuthzenAction
    resource: SearchedEntity


class ActionSearchRequest(_SearchRequest):
    subject: AuthzenEntity
    resource: AuthzenEntity


class SearchPageAnswer(BaseModel):
    next_token: str = Field(description="empty on the last page")
    count: int


class SearchResponse(BaseModel):
    """Entities (subject and resource searches) or actions (action search)."""

    page: SearchPageAnswer | None = None
    results: list[dict[str, Any]]


class PdpMetadata(BaseModel):
    """Policy Decision Point metadata (AuthZEN 1.0 section 9)."""

    policy_decision_point: str
    access_evaluation_endpoint: str
    access_evaluations_endpoint: str
    search_subject_endpoint: str
    search_resource_endpoint: str
    search_action_endpoint: str
    access_request_endpoint: str
    capabilities: list[str]


TAG = Tag(name="authzen", description="OpenID AuthZEN Authorization API 1.0 (docs/authzen.md)")
PROBLEMS = {
    400: "a request the API cannot read: `detail` says what is wrong",
    401: "no credential, or a bad one",
    403: "the credential lacks the scope decisions:check",
    413: "request body too large",
}


def _operation(
    method: str,
    path: str,
    body: type[BaseModel] | None,
    answer: type[BaseModel],
    more: dict[int, str] | None = None,
    ok: int = 200,
) -> Any:
    """Document an operation: its body (read by the handler itself), answer and problems."""
    operation_id = "authzen_" + path.strip("/").replace("/", "_").replace(".", "").replace("-", "_")
    SELF_VALIDATED.add(operation_id)
    extensions: dict[str, Any] = {}
    if body is not None:
        schema = get_model_schema(body)
        for name, value in {body.__name__: schema, **schema.pop("$defs", {})}.items():
            access.components_schemas[name] = Schema(**value)
        ref = {"$ref": f"#/components/schemas/{body.__name__}"}
        extensions["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref}},
        }
    problems = (
        PROBLEMS
        if body is not None
        else {k: v for k, v in PROBLEMS.items() if k != 400 and k != 413}
    )
    problems = {**problems, **(more or {})}
    register = getattr(access, method.lower())
    return register(
        path,
        tags=[TAG],
        operation_id=operation_id,
        responses={ok: answer, **{s: problem_response(d) for s, d in problems.items()}},
        security=[{"bearer": [CHECK]}],
        description=f"Needs scope `{CHECK}`. Echoes `X-Request-ID`.",
        openapi_extensions=extensions,
    )


@access.before_request
def _authenticate() -> Response | None:
    return authenticate(CHECK)


class _BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@access.errorhandler(_BadRequest)
def _bad_request(error: _BadRequest) -> Response:
    return problem(400, "Bad Request", error.detail, type=PROBLEM_TYPE + "invalid-request")


def _document() -> Any:
    """The request's JSON document (the body rule's limits), a 400 if there is none."""
    try:
        return bodies.document()
    except bodies.Refused as refused:
        if refused.code == 413:
            raise
        raise _BadRequest(refused.description or "the body is not a JSON document") from None


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=200, mimetype="application/json")


def _signer() -> approvals.Signer:
    """The binding tokens' signer: PROVISIONING_APPROVAL_SECRET, or the stored secret."""
    signer = current_app.extensions.get("provisioning.approvals")
    if signer is None:
        settings = current_app.extensions["provisioning.settings"]
        secret = settings.approval_secret or shared(database(), APPROVAL_BINDINGS)
        signer = current_app.extensions["provisioning.approvals"] = approvals.Signer(secret)
    return signer


def _requests_endpoint() -> str:
    return base_url() + ENDPOINTS["access_request_endpoint"]


def _calls() -> approvals.Calls:
    """Denials made requestable here; approval states signed for this PDP."""
    return approvals.Calls(_signer, _requests_endpoint(), base_url())


def _decider(connection: Any) -> authzen.Decider:
    settings = current_app.extensions["provisioning.settings"]
    return authzen.Decider(connection, Interface(settings.authzen_interface), _calls())


def _recorded(outcomes: list[authzen.Outcome]) -> list[authzen.Outcome]:
    """Note each used grant's last use, and log each evaluation with the agent acting (at
    DEBUG: a line per evaluation costs more than the evaluation)."""
    recorder: LastUseRecorder = current_app.extensions["provisioning.api.last_use"]
    pep = caller().name
    for outcome in outcomes:
        if outcome.grant_id is not None:
            recorder.used(
                outcome.grant_id,
                recorded=outcome.last_used_at,
                agent=outcome.agent,
                evaluation_id=outcome.evaluation_id,
            )
        log.debug(
            "authzen evaluation %s: %s on %s/%s for %s by %s via %s",
            outcome.evaluation_id,
            outcome.decision,
            outcome.connector,
            outcome.action,
            outcome.reason,
            outcome.agent or "-",
            pep,
        )
    return outcomes


def _evaluate_one(document: Any) -> Response:
    try:
        question = authzen.evaluation(document)
        outcome = database().hot_read(lambda c: _decider(c).decide(question))
    except authzen.Invalid as exc:
        raise _BadRequest(str(exc)) from None
    return _json(_recorded([outcome])[0].answer())


@_operation("POST", f"{PREFIX}/evaluation", EvaluationRequest, AuthzenDecision)
def evaluation() -> Response:
    """Access Evaluation API: one decision."""
    return _evaluate_one(_document())


@_operation("POST", f"{PREFIX}/evaluations", EvaluationsRequest, EvaluationsResponse)
def evaluations() -> Response:
    """Access Evaluations API: decisions in request order, under the requested semantic."""
    document = _document()
    try:
        asked = authzen.batch(document)
    except authzen.Invalid as exc:
        raise _BadRequest(str(exc)) from None
    if asked is None:
        return _evaluate_one(document)
    # Set-wise reads (IN lists, not point lookups): planned for their parameters on
    # PostgreSQL, one snapshot on SQLite (Database.hot_reader).
    with database().hot_reader() as connection:
        outcomes = _decider(connection).run(asked.items, asked.semantic)
    return _json({"evaluations": [o.answer() for o in _recorded(outcomes)]})


def _search(kind: str) -> Response:
    try:
        query = authzen.search(kind, _document())
        # On the hot connections for point lookups (generic plans on PostgreSQL): measured
        # faster for a server's tools than planning each statement (docs/performance.md).
        found = database().hot_read(lambda c: authzen.Searcher(_decider(c)).run(query))
    except authzen.Invalid as exc:
        raise _BadRequest(str(exc)) from None
    body: dict[str, Any] = {}
    if found.paged:
        body["page"] = {"next_token": found.next_token, "count": len(found.results)}
    body["results"] = found.results
    return _json(body)


@_operation("POST", f"{PREFIX}/search/subject", SubjectSearchRequest, SearchResponse)
def search_subject() -> Response:
    """Subject Search API: the people who may do the action on the resource."""
    return _search("subject")


@_operation("POST", f"{PREFIX}/search/resource", ResourceSearchRequest, SearchResponse)
def search_resource() -> Response:
    """Resource Search API: the resources on which the person may do the action."""
    return _search("resource")


@_operation("POST", f"{PREFIX}/search/action", ActionSearchRequest, SearchResponse)
def search_action() -> Response:
    """Action Search API: the actions the person may do on the resource."""
    return _search("action")


def base_url() -> str:
    """The Policy Decision Point identifier: PROVISIONING_PUBLIC_URL, or this request's."""
    settings = current_app.extensions["provisioning.settings"]
    return (settings.public_url or request.host_url).rstrip("/")


@_operation("GET", METADATA, None, PdpMetadata)
def metadata() -> Response:
    """Policy Decision Point metadata (AuthZEN 1.0 section 9)."""
    base = base_url()
    body: dict[str, Any] = {"policy_decision_point": base}
    body.update({name: base + path for name, path in ENDPOINTS.items()})
    body["capabilities"] = [approvals.CAPABILITY]
    return _json(body)


# -- the draft Access Request & Approval profile: call-level approval tasks ------------------


class CallbackRequest(_Open):
    """Where to notify when the task closes (docs/authzen.md, "Callbacks"): an endpoint
    under PROVISIONING_CALLBACK_ALLOWLIST; refused with 400 `invalid-callback` otherwise."""

    endpoint: str = Field(min_length=1, max_length=callbacks.MAX_ENDPOINT)
    state: Any = Field(None, description="returned unmodified; at most 1 KiB of JSON")
    events: list[str] | None = Field(
        None, description="a subset of " + ", ".join(callbacks.EVENTS) + " (default: all)"
    )


class AccessRequestSubmission(_Open):
    """A requestable denial submitted (the draft profile's Access Request)."""

    subject: AuthzenEntity
    resource: AuthzenEntity | None = Field(None, description="absent with `items`")
    action: AuthzenAction | None = Field(None, description="absent with `items`")
    context: dict[str, Any] | None = Field(None, description="`arguments` as evaluated")
    items: list[dict[str, Any]] | None = Field(
        None,
        max_length=calls.MAX_ITEMS,
        description="a bundle: each item's `resource`, `action`, its own `denial` and, if "
        "its arguments differ, its own `context` (over the top-level one)",
    )
    denial: dict[str, Any] | None = Field(
        None, description="`binding_token` and `expires_at`, echoed (in each item with `items`)"
    )
    requested_access: dict[str, Any] | None = None
    callback: CallbackRequest | None = None


class TaskHandle(BaseModel):
    task: dict[str, Any]
    result: dict[str, Any] | None = None


class TaskPath(BaseModel):
    task_id: str


class TaskCancel(_Open):
    reason: str | None = None
    comment: str | None = None


@access.errorhandler(callbacks.CallbackError)
def _callback_error(error: callbacks.CallbackError) -> Response:
    return problem(400, "Invalid callback", str(error), type=PROBLEM_TYPE + "invalid-callback")


@access.errorhandler(calls.TaskError)
def _task_error(error: calls.TaskError) -> Response:
    return problem(error.status, _TASK_TITLES[error.code], error.detail, type=error.type)


_TASK_TITLES = {
    "not_requestable": "Access is not requestable",
    "invalid_denial_binding": "Invalid denial binding",
    "expired_denial": "Denial expired",
    "duplicate_request": "Duplicate request",
    "unknown_task": "Unknown task",
    "task_expired": "Task expired",
    "invalid_task_state": "Invalid task state",
}


def _handle(request_row: Any, status: int) -> Response:
    body = calls.handle(request_row, _requests_endpoint(), _calls())
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Location"] = body["task"]["status_endpoint"]
    return response


def _workflow_refused(exc: Any) -> None:
    """A request the approval chain cannot take (no approver, the requester approving)."""
    raise calls.TaskError("not_requestable", str(exc))


_TASK = {404: "unknown_task: no such task"}


@_operation(
    "POST",
    f"{PREFIX}/requests",
    AccessRequestSubmission,
    TaskHandle,
    {
        400: "a request the API cannot read (`invalid-request`), a callback this service "
        "will not call (`invalid-callback`), or the profile's `invalid_denial_binding`, "
        "`not_requestable`",
        409: "duplicate_request: the Idempotency-Key was used with another body",
        410: "expired_denial: the denial's expires_at passed",
    },
    ok=201,
)
def submit_request() -> Response:
    """Access Request Endpoint: open the approval task of a requestable denial (an
    ``Idempotency-Key`` makes a retry answer the same task)."""
    document = _document()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= idempotency.MAX_KEY:
        raise _BadRequest(f"Idempotency-Key must be 1 to {idempotency.MAX_KEY} characters")
    settings = current_app.extensions["provisioning.settings"]
    signer = _signer()
    # Checked before the transaction: it resolves the endpoint's host.
    callback = callbacks.read(document, settings, Egress(settings.delivery_allowed_network_list))
    return idempotency.settled(lambda: _submit(document, key, settings, signer, callback))


def _submit(
    document: Any,
    key: str | None,
    settings: Any,
    signer: Any,
    callback: callbacks.Callback | None = None,
) -> Response:
    with database().transaction() as session:
        try:
            task, _ = calls.submit(
                session,
                origin(),
                document,
                signer,
                key=idempotency.key(caller().name, key),
                settings=settings,
                callback=callback,
                tasks_endpoint=_requests_endpoint(),
            )
        except authzen.Invalid as exc:
            raise _BadRequest(str(exc)) from None
        except workflow.RequestError as exc:
            _workflow_refused(exc)
        answer = _handle(task, 201)
    return answer


@_operation("GET", f"{PREFIX}/requests/<task_id>", None, TaskHandle, _TASK)
def task_status(path: TaskPath) -> Response:
    """Task Status Endpoint: the task's status and, once approved, its approval."""
    with database().reader() as session:
        return _handle(calls.task(session, path.task_id), 200)


@_operation(
    "POST",
    f"{PREFIX}/requests/<task_id>/cancel",
    TaskCancel,
    TaskHandle,
    {**_TASK, 409: "invalid_task_state: the task is closed"},
)
def cancel_task(path: TaskPath) -> Response:
    """Cancel a pending task (``invalid_task_state`` once it is closed)."""
    document = request.get_data() and _document()
    reason = None
    if isinstance(document, dict):
        given = document.get("reason") or document.get("comment")
        reason = given[:1000] if isinstance(given, str) else None
    elif document:
        raise _BadRequest("the body, when sent, is a JSON object")
    with database().transaction() as session:
        task = calls.cancel(session, origin(), path.task_id, reason)
        return _handle(task, 200)
