"""Call-level approval tasks (the draft OpenID AuthZEN Access Request & Approval profile):
opening one from a requestable denial, idempotently, reading its status, cancelling it.

A PEP that got ``false`` with ``context.access_request`` submits the call (``subject``,
``resource``, ``action``, ``context`` with its ``arguments``, and ``denial`` echoing
``expires_at`` and ``binding_token``). The binding token must be ours, unexpired, unused,
and bound to exactly the submitted person, connector, tool and argument digest under the
action's current policy (:mod:`provisioning.entitlements.approvals`). The task is an
access request of kind ``call``: the connector's request-policy chain decides it through
:func:`provisioning.requests.workflow.decide`, like any request (one approval chain), and
the same audit events and ``request.*`` outbox notifications tell of it. Approved, it
carries an approval (``apr_…``, with its signed ``state``: :meth:`approvals.Signer.state`)
valid until ``approved_until``; nothing is granted. Submissions are made through
:func:`provisioning.requests.workflow.replay_or_create`, one person at a time. A
submission's ``callback`` (:mod:`provisioning.requests.callbacks`) is kept with the task.

A bundled submission (``items``, at most :data:`MAX_ITEMS`) is one task for several calls
of one person and one connector: each item checked as a single submission is, with its own
denial (one bad item refuses them all), kept in ``call["items"]``, decided as one request;
approved, each item has its own approval (the task's approval id, a dot, its own part).
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.audit.log import Origin
from provisioning.connectors.models import Action, Connector, Interface
from provisioning.database import utcnow
from provisioning.delivery import outbox
from provisioning.entitlements import approvals, authzen
from provisioning.entitlements.policy import KIND_AT
from provisioning.identity.models import User
from provisioning.requests import callbacks, idempotency, workflow
from provisioning.requests.models import (
    AccessRequest,
    RequestKind,
    RequestPolicy,
    RequestState,
)
from provisioning.settings import DEFAULTS, Settings

PROBLEM = "urn:openid:authzen:access-request:error:"
MAX_JUSTIFICATION = 2000
MAX_ITEMS = 20
"""The most calls one bundled submission (``items``) may ask for."""


class TaskError(Exception):
    """The profile's error: ``code`` (``not_requestable``, ``expired_denial``,
    ``invalid_denial_binding``, ``duplicate_request``, ``unknown_task``,
    ``invalid_task_state``) and its HTTP status; nothing was changed."""

    STATUS: ClassVar[dict[str, int]] = {
        "not_requestable": 400,
        "invalid_denial_binding": 400,
        "expired_denial": 410,
        "duplicate_request": 409,
        "unknown_task": 404,
        "task_expired": 410,
        "invalid_task_state": 409,
    }

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail, self.status = code, detail, self.STATUS[code]

    @property
    def type(self) -> str:
        return PROBLEM + self.code


def _binding(claims: dict[str, Any], submitted: approvals.Binding) -> None:
    expected = approvals.bound(claims)
    for name in ("user_id", "connector", "action", "arguments_digest"):
        if getattr(expected, name) != getattr(submitted, name):
            what = {"user_id": "subject", "arguments_digest": "context.arguments"}.get(name, name)
            raise TaskError(
                "invalid_denial_binding", f"the denial's binding does not cover this {what}"
            )


def submit(
    session: Session,
    origin: Origin,
    document: Any,
    signer: approvals.Signer,
    *,
    key: str | None = None,
    settings: Settings = DEFAULTS,
    callback: callbacks.Callback | None = None,
    tasks_endpoint: str = "",
) -> tuple[AccessRequest, bool]:
    """Open a call's approval task from a requestable denial; (the task, whether it is new).
    A retry under the same key is answered before the denial is read again (it may have
    expired since). :class:`authzen.Invalid` for a body that is not a submission,
    :class:`TaskError` for one that cannot be accepted. ``callback`` is the body's callback
    as :func:`callbacks.read` checked it (before the transaction), kept with the task and
    its status endpoint (``tasks_endpoint``/id)."""
    if isinstance(document, dict) and document.get("callback") is not None and callback is None:
        raise callbacks.CallbackError("the callback was not checked")
    body = idempotency.digest(document)
    checked: list[_Submission] = []

    def person() -> User:
        checked.extend(_check(session, document, signer, settings))
        return checked[0].user

    try:
        return workflow.replay_or_create(
            session,
            origin,
            key=key,
            body=body,
            kind=RequestKind.CALL,
            person=person,
            create=lambda _: _open(
                session, origin, checked, document, key, body, settings, callback, tasks_endpoint
            ),
        )
    except idempotency.Reused as exc:
        raise TaskError("duplicate_request", str(exc)) from None


@dataclass(frozen=True)
class _Submission:
    """A submission whose denial binds it: what the task is opened with."""

    user: User
    connector: Connector
    action: Action
    claims: dict[str, Any]
    binding: approvals.Binding
    context: dict[str, Any]
    now: dt.datetime
    document: dict[str, Any]  # the call as evaluated
    item: dict[str, Any]  # where it came from: the submission, or a bundle's item


def _check(
    session: Session, document: Any, signer: approvals.Signer, settings: Settings
) -> list[_Submission]:
    """Each call the submission asks for (one, or a bundle's items), read as the decision
    path read it, its denial verified; a bundle is one person's calls of one connector, each
    with its own denial (this service issues no bundle denials)."""
    if not isinstance(document, dict) or document.get("items") is None:
        return [_check_call(session, document, document, signer, settings)]
    bundled = document["items"]
    if not isinstance(bundled, list) or not 1 <= len(bundled) <= MAX_ITEMS:
        raise authzen.Invalid(f"items must be an array of 1 to {MAX_ITEMS} items")
    if "resource" in document or "action" in document:
        raise authzen.Invalid("a submission with items carries no top-level resource or action")
    context = document.get("context")
    checked = []
    for n, item in enumerate(bundled):
        if not isinstance(item, dict):
            raise authzen.Invalid(f"items[{n}] must be an object")
        if "subject" in item:
            raise authzen.Invalid(f"items[{n}]: the bundle's subject is its top-level subject")
        own = item.get("context")
        if own is not None and not isinstance(own, dict):
            raise authzen.Invalid(f"items[{n}].context must be an object")
        call = {
            "subject": document.get("subject"),
            "resource": item.get("resource"),
            "action": item.get("action"),
            "context": {**(context if isinstance(context, dict) else {}), **(own or {})},
        }
        if context is not None and not isinstance(context, dict):
            call["context"] = context  # refused as the decision path refuses it
        checked.append(_check_call(session, call, item, signer, settings))
    if len({c.claims["jti"] for c in checked}) < len(checked):
        raise TaskError("invalid_denial_binding", "an item repeats another's denial")
    if len({c.binding.connector for c in checked}) > 1:
        raise TaskError(
            "not_requestable",
            "a bundle's items are calls of one connector (one approval chain decides them)",
        )
    return checked


def _check_call(
    session: Session,
    document: Any,
    bound_by: Any,
    signer: approvals.Signer,
    settings: Settings,
) -> _Submission:
    """One call read as the decision path read it, its denial (``bound_by["denial"]``)
    verified."""
    question = authzen.evaluation(document)
    denial = bound_by.get("denial")
    if not isinstance(denial, dict):
        raise TaskError("invalid_denial_binding", "denial is required (binding_token, expires_at)")
    if "binding_token" not in denial:
        raise TaskError(
            "invalid_denial_binding",
            "denial.binding_token is required: this service binds denials by token only",
        )
    try:
        claims = signer.read(denial["binding_token"])
    except approvals.BindingError as exc:
        raise TaskError("invalid_denial_binding", str(exc)) from None
    if denial.get("expires_at") != claims["denial_expires_at"]:
        raise TaskError(
            "invalid_denial_binding", "denial.expires_at is not the expiry the denial carried"
        )
    now = utcnow()
    if claims["exp"] <= now.timestamp():
        raise TaskError("expired_denial", "the denial expired: evaluate the call again")
    decider = authzen.Decider(session.connection(), Interface(settings.authzen_interface))
    target = decider.target(question)
    person_id = decider.person(question.subject.id or "")
    if target.connector is None or target.action is None or person_id is None:
        raise TaskError("invalid_denial_binding", "the denial's binding does not cover this call")
    rule = approvals.rule(session.connection(), target.connector, target.action)
    submitted = approvals.Binding(
        person_id,
        target.connector,
        target.action,
        approvals.arguments_digest(question.context),
        rule.version if rule is not None else "",
    )
    _binding(claims, submitted)
    if rule is None or not rule.requires_approver or not rule.requestable:
        raise TaskError("not_requestable", "a call of this action is not approved by a person")
    if rule.version != claims["policy_version"]:
        raise TaskError(
            "not_requestable", "the action's policy changed since the denial: evaluate again"
        )
    user = session.get(User, uuid.UUID(person_id))
    connector = session.scalar(select(Connector).where(Connector.slug == target.connector))
    action = (
        session.scalar(
            select(Action).where(Action.connector_id == connector.id, Action.name == target.action)
        )
        if connector is not None
        else None
    )
    policy = session.get(RequestPolicy, connector.id) if connector is not None else None
    if user is None or connector is None or action is None or policy is None:
        raise TaskError("not_requestable", "a call of this action is not approved by a person")
    return _Submission(
        user, connector, action, claims, submitted, question.context, now, document, bound_by
    )


def _open(
    session: Session,
    origin: Origin,
    checked: list[_Submission],
    document: dict[str, Any],
    key: str | None,
    body: str,
    settings: Settings,
    callback: callbacks.Callback | None,
    tasks_endpoint: str,
) -> AccessRequest:
    """The task, under the person's hold: one per denial, with its callback if any."""
    first = checked[0]
    _unused(session, first.user, [c.claims["jti"] for c in checked])
    calls = [_call(c, _requested_until(document, c.item)) for c in checked]
    if document.get("items") is None:
        call = calls[0]
    else:
        asked = [c["requested_until"] for c in calls if c["requested_until"]]
        call = {
            "connector": first.binding.connector,
            "items": calls,
            "requested_until": min(asked, default=None),
            "subject": document["subject"],
        }
    client = document.get("client")
    call["client"] = client if isinstance(client, dict) else None
    request = workflow.open_call(
        session,
        origin,
        first.user,
        first.connector,
        access_level=max((_KIND_AT_LEVEL[c.action.kind] for c in checked), key=_LEVELS.index),
        justification=_justification(first.context, [c.binding.action for c in checked]),
        deadline=first.now + dt.timedelta(hours=settings.call_task_hours),
        call=call,
        task_id="arq_" + secrets.token_urlsafe(24),
        binding_jti=first.claims["jti"],
        idempotency_key=key,
        idempotency_digest=body if key is not None else None,
    )
    if callback is not None:
        request.callback = callback.stored(f"{tasks_endpoint}/{request.task_id}")
        outbox.callback_target(session, settings.delivery_max_attempts)
    return request


def _call(checked: _Submission, requested_until: str | None) -> dict[str, Any]:
    """What a task keeps of one call: its binding and what the PEP sent of it."""
    submitted = checked.binding
    return {
        "connector": submitted.connector,
        "action": submitted.action,
        "arguments_digest": submitted.arguments_digest,
        "policy_version": submitted.policy_version,
        "evaluation_id": checked.claims.get("evaluation_id"),
        "binding_jti": checked.claims["jti"],
        "requested_until": requested_until,
        "subject": checked.document["subject"],
        "resource": checked.document["resource"],
        "act": checked.document["action"],
    }


def _unused(session: Session, user: User, jtis: list[str]) -> None:
    """One task per denial: none of these was submitted before (as a task's denial, or as
    a bundle item's: tokens bind one person, so that person's tasks are where to look, and
    only those made while the unexpired tokens could have been: since they were issued)."""
    since = utcnow() - dt.timedelta(minutes=approvals.BINDING_MINUTES + 1)
    used = set(
        session.scalars(
            select(AccessRequest.binding_jti).where(AccessRequest.binding_jti.in_(jtis))
        )
    )
    for call in session.scalars(
        select(AccessRequest.call).where(
            AccessRequest.user_id == user.id,
            AccessRequest.kind == RequestKind.CALL,
            AccessRequest.created_at >= since,
        )
    ):
        if isinstance(call, dict) and "items" in call:
            used.update(str(i.get("binding_jti")) for i in approvals.items(call))
    if used.intersection(jtis):
        raise TaskError(
            "invalid_denial_binding",
            "this denial was already submitted: one task per denial (send the same "
            "Idempotency-Key to find it)",
        )


_KIND_AT_LEVEL = {kind: level for level, kind in KIND_AT.items()}
_LEVELS = list(KIND_AT)


def _justification(context: dict[str, Any], actions: list[str]) -> str:
    given = context.get("business_justification")
    if isinstance(given, str) and given.strip():
        return given.strip()[:MAX_JUSTIFICATION]
    return f"a call of {', '.join(dict.fromkeys(actions))}"[:MAX_JUSTIFICATION]


def _requested_until(document: dict[str, Any], item: dict[str, Any]) -> str | None:
    """``requested_access.requested_until``, an item's own over the submission's."""
    asked = {}
    for given in (document.get("requested_access"), item.get("requested_access")):
        if given is not None and not isinstance(given, dict):
            raise authzen.Invalid("requested_access must be an object")
        asked.update(given or {})
    if asked.get("requested_until") is None:
        return None
    value = asked["requested_until"]
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise authzen.Invalid("requested_access.requested_until must be an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise authzen.Invalid("requested_access.requested_until must carry its offset")
    try:
        return moment.astimezone(dt.UTC).isoformat()
    except OverflowError:
        raise authzen.Invalid("requested_access.requested_until is out of range") from None


# -- the task ---------------------------------------------------------------------------


def task(session: Session, task_id: str, *, lock: bool = False) -> AccessRequest:
    """The call task with this handle, or :class:`TaskError` ``unknown_task``."""
    statement = select(AccessRequest).where(
        AccessRequest.task_id == task_id, AccessRequest.kind == RequestKind.CALL
    )
    if lock:
        statement = statement.with_for_update()
    found = session.scalar(statement) if 1 <= len(task_id) <= 64 else None
    if found is None:
        raise TaskError("unknown_task", "no such task")
    return found


def status(request: AccessRequest, now: dt.datetime | None = None) -> str:
    """The profile's status: a pending task past its deadline is ``expired`` at once (the
    expiry job closes it)."""
    if request.state is RequestState.PENDING and request.deadline <= (now or utcnow()):
        return str(RequestState.EXPIRED)
    return str(request.state)


def handle(
    request: AccessRequest, endpoint: str, signed: approvals.Calls | None = None
) -> dict[str, Any]:
    """The task handle and, once approved, its result (re-evaluation mode), with the
    approval's ``state`` signed for ``signed.pdp`` when ``signed`` is given."""
    url = f"{endpoint}/{request.task_id}"
    state = status(request)
    body: dict[str, Any] = {
        "task": {
            "id": request.task_id,
            "status": state,
            "status_endpoint": url,
            "expires_at": approvals.timestamp(request.deadline),
            "progress": {
                "current_step": min(request.stage + 1, len(request.approvers)),
                "total_steps": len(request.approvers),
                "step_name": f"{request.approvers[min(request.stage, len(request.approvers) - 1)]}"
                "_approval",
            },
        }
    }
    if state == RequestState.PENDING:
        body["task"]["links"] = {"cancel": f"{url}/cancel"}
    approved = state == RequestState.APPROVED and request.approval_id and request.approved_until
    call = request.call or {}
    if "items" not in call:
        if approved:
            body["result"] = _result(request, signed, None)
        return body
    # A bundle: one decision for all its items, each with its own approval (re-evaluated
    # item by item); never ``partial``, and no top-level result.
    body["task"]["items"] = [
        {
            "resource": item.get("resource"),
            "action": item.get("act"),
            "status": state,
            **({"result": _result(request, signed, n)} if approved else {}),
        }
        for n, item in enumerate(approvals.items(call))
    ]
    return body


def _result(request: AccessRequest, signed: approvals.Calls | None, item: int | None) -> dict:
    """The approval of the task's call (of a bundle's ``item``), in re-evaluation mode."""
    assert request.approval_id and request.approved_until
    one = approvals.items(request.call or {})[item] if item is not None else {}
    result: dict[str, Any] = {
        "mode": "reevaluate",
        "approval": {
            "id": one.get("approval_id", request.approval_id),
            "approved_at": approvals.timestamp(request.closed_at or request.approved_until),
            "approved_until": approvals.timestamp(request.approved_until),
        },
    }
    if signed is not None:
        result["approval"]["state"] = signed.signer().state(request, signed.pdp, item)
    return result


def cancel(
    session: Session, origin: Origin, task_id: str, reason: str | None = None
) -> AccessRequest:
    """The PEP cancels a pending task; ``invalid_task_state`` once it is closed."""
    request = task(session, task_id, lock=True)
    if status(request) != RequestState.PENDING:
        raise TaskError("invalid_task_state", f"the task is {status(request)}: nothing to cancel")
    return workflow.withdraw(session, origin, request, origin.actor, reason)
