"""Access requests from asking to expiry: policies, creation, approval chains, cancel, lapse.

A person (or their manager, on their behalf) asks for a connector at an access
level, optionally for some of its actions, with a justification and a duration
no longer than the connector's request policy allows. The policy's approval
chain (the connector's owner, the person's manager, or both in order) decides
it stage by stage before a deadline; nobody decides a request they asked for
or that is for themselves. A denial ends it; the last approval makes it a
source of access (:data:`provisioning.entitlements.sources.REQUESTS`) until
``granted_at + duration`` and the engine grants it, as it grants everything;
the expiry job revokes it on time, reminding before. A request undecided at
its deadline expires (:func:`lapse`); the requester may cancel it while
pending. Only an approved request grants anything. A request that would break
a separation-of-duties rule is refused when made and again at its approval
(:func:`provisioning.entitlements.mappings.check_grant`).

Every step is audited in the caller's transaction, and told to the targets
through the outbox: ``request.created``, ``request.decided`` (each stage's
decision, a cancellation and an expiry without decision) and, from
:func:`provisioning.entitlements.expiry.remind`, ``request.expiring``; a call
task that closes owes its callback, if it named one, a notification
(:mod:`provisioning.requests.callbacks`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.connectors.models import AccessLevel, Connector
from provisioning.database import utcnow
from provisioning.delivery import outbox
from provisioning.entitlements import approvals, engine
from provisioning.entitlements.mappings import MappingError, SeparationConflict, check_grant
from provisioning.identity import directory
from provisioning.identity.models import User
from provisioning.requests import callbacks, idempotency
from provisioning.requests.models import (
    AccessRequest,
    Approver,
    RequestDecision,
    RequestKind,
    RequestPolicy,
    RequestState,
    RequestStep,
)
from provisioning.settings import DEFAULTS, Settings

MAX_DAYS = 365
MAX_DECIDE_DAYS = 90


class RequestError(ValueError):
    """A request, decision or policy that cannot be made as asked; nothing was changed.

    ``kind``: ``invalid`` (the input is wrong), ``conflict`` (the state forbids it),
    ``separation`` (a separation-of-duties rule forbids it: the message names the rule) or
    ``forbidden`` (this person may not do it). ``field`` names the input at fault.
    """

    def __init__(self, message: str, kind: str = "invalid", field: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


def _forbidden(message: str) -> RequestError:
    return RequestError(message, "forbidden")


def _conflict(message: str) -> RequestError:
    return RequestError(message, "conflict")


# -- policies -----------------------------------------------------------------------


def set_policy(
    session: Session,
    origin: Origin,
    connector: Connector,
    *,
    approvers: list[str],
    max_days: int,
    decide_within_days: int,
) -> RequestPolicy:
    """Make ``connector`` requestable with this approval chain and these bounds."""
    try:
        chain = [str(Approver(a)) for a in approvers]
    except ValueError:
        raise RequestError("approvers are owner and/or manager", field="approvers") from None
    if not 1 <= len(chain) <= 2 or len(set(chain)) != len(chain):
        raise RequestError(
            "approvers is one or two stages, each named once: owner, manager", field="approvers"
        )
    if not 1 <= max_days <= MAX_DAYS:
        raise RequestError(f"max_days is between 1 and {MAX_DAYS}", field="max_days")
    if not 1 <= decide_within_days <= MAX_DECIDE_DAYS:
        raise RequestError(
            f"decide_within_days is between 1 and {MAX_DECIDE_DAYS}", field="decide_within_days"
        )
    policy = session.get(RequestPolicy, connector.id, with_for_update=True)
    before = policy_state(policy) if policy is not None else None
    if policy is None:
        policy = RequestPolicy(connector_id=connector.id)
        session.add(policy)
    policy.approvers = chain
    policy.max_days = max_days
    policy.decide_within_days = decide_within_days
    policy.updated_by = origin.actor
    session.flush()
    after = policy_state(policy)
    if after != before:
        record(
            session,
            origin,
            [
                Entry(
                    "request_policy.set", "connector", str(connector.id), before=before, after=after
                )
            ],
        )
    return policy


def remove_policy(session: Session, origin: Origin, connector: Connector) -> None:
    """Stop taking requests for ``connector`` (requests already made run their course)."""
    policy = session.get(RequestPolicy, connector.id, with_for_update=True)
    if policy is None:
        raise _conflict(f"connector {connector.slug} takes no requests")
    before = policy_state(policy)
    session.delete(policy)
    session.flush()
    record(
        session,
        origin,
        [Entry("request_policy.removed", "connector", str(connector.id), before=before)],
    )


def policy_state(policy: RequestPolicy) -> dict[str, Any]:
    return {
        "approvers": list(policy.approvers),
        "max_days": policy.max_days,
        "decide_within_days": policy.decide_within_days,
    }


# -- who approves -------------------------------------------------------------------


def approver_of(
    session: Session, role: Approver | str, request: AccessRequest, connector: Connector
) -> User | None:
    """The person who decides a stage of ``role`` of this request now, if one can."""
    if Approver(role) is Approver.OWNER:
        return directory.person(session, connector.owner)
    user = session.get(User, request.user_id)
    return directory.manager(session, user) if user is not None else None


def _check_approver(
    session: Session, role: str, request: AccessRequest, connector: Connector
) -> User:
    """The stage's approver, who must exist and be neither the requester nor the person."""
    approver = approver_of(session, role, request, connector)
    if approver is None:
        who = f"connector {connector.slug}'s owner" if role == Approver.OWNER else "the manager"
        raise _conflict(f"nobody can approve this request: {who} is no active user")
    if approver.id in (request.user_id, request.requested_by_id):
        raise _conflict(
            f"the {role} stage's approver ({approver.user_name}) asked for this access or "
            "would receive it: an approver is never the requester"
        )
    return approver


# -- asking -------------------------------------------------------------------------


def hold(session: Session, user: User) -> None:
    """Take ``user``'s row for this transaction: requests for one person are made one at a
    time, so a second one waits for the first's commit and then sees it (its pending
    request, its Idempotency-Key). A no-op on SQLite, whose writers are one at a time."""
    session.execute(select(User.id).where(User.id == user.id).with_for_update())


def replay_or_create(
    session: Session,
    origin: Origin,
    *,
    key: str | None,
    body: str | None,
    kind: RequestKind,
    person: Callable[[], User],
    create: Callable[[User], AccessRequest],
) -> tuple[AccessRequest, bool]:
    """Every request is made here: (the request, whether it is new).

    ``key`` is the stored Idempotency-Key (:func:`idempotency.key`; None: none sent) and
    ``body`` the submission's digest. The request made before under the key with an
    equivalent body is answered (audited as a replay); another body, or a request of
    another ``kind``, is :class:`idempotency.Reused`. Otherwise ``person()`` says who the
    request is for (checking the submission, and raising if it cannot be taken), that person
    is held (:func:`hold`), the key is looked for once more (a racing twin committed while
    this one waited) and ``create(person)`` makes the request under the hold."""
    earlier = idempotency.replayed(session, key, body)
    if earlier is None:
        user = person()
        hold(session, user)
        earlier = idempotency.replayed(session, key, body)
        if earlier is None:
            return create(user), True
    if earlier.kind != kind:
        raise idempotency.Reused("this Idempotency-Key named another request")
    idempotency.record_replay(session, origin, earlier)
    return earlier, False


def create(
    session: Session,
    origin: Origin,
    requester: User,
    user: User,
    connector: Connector,
    access_level: AccessLevel | str,
    *,
    justification: str,
    duration_days: int,
    actions: list[str] | None = None,
    idempotency_key: str | None = None,
    idempotency_digest: str | None = None,
) -> AccessRequest:
    """``requester`` asks for ``user``'s access (themselves, or a report of theirs): made
    under :func:`replay_or_create`'s hold, or the request made before under
    ``idempotency_key`` (a digest, :func:`idempotency.key`) with an equivalent body
    (``idempotency_digest``)."""

    def made(_: User) -> AccessRequest:
        if requester.id != user.id:
            boss = directory.manager(session, user)
            if boss is None or boss.id != requester.id:
                raise _forbidden(
                    f"{requester.user_name} may ask only for themselves or for a report of theirs"
                )
        if not user.eligible:
            raise _conflict(f"user {user.user_name} is {user.state}: no access may be requested")
        if not justification or not justification.strip():
            raise RequestError("a request needs a justification", field="justification")
        policy = session.get(RequestPolicy, connector.id)
        if policy is None:
            raise _conflict(f"connector {connector.slug} takes no access requests")
        if not 1 <= duration_days <= policy.max_days:
            raise RequestError(
                f"duration_days is between 1 and connector {connector.slug}'s maximum, "
                f"{policy.max_days}",
                field="duration_days",
            )
        level = AccessLevel(access_level)
        try:
            checked, _ = check_grant(session, connector, level, actions, None, [user.id])
        except SeparationConflict as exc:
            raise RequestError(str(exc), "separation", "connector") from None
        except MappingError as exc:
            raise RequestError(str(exc), field=exc.field) from None
        now = utcnow()
        open_one = select(AccessRequest.id).where(
            AccessRequest.user_id == user.id,
            AccessRequest.connector_id == connector.id,
            AccessRequest.kind == RequestKind.ACCESS,  # call tasks are approved call by call
            AccessRequest.state == RequestState.PENDING,
            AccessRequest.deadline > now,  # one past its deadline only waits for the job
        )
        if (pending := session.scalar(open_one)) is not None:
            raise _conflict(f"request {pending} for this access is already pending")
        request = AccessRequest(
            user_id=user.id,
            requested_by_id=requester.id,
            requested_by=requester.user_name,
            connector_id=connector.id,
            access_level=level,
            actions=checked,
            justification=justification.strip(),
            duration_days=duration_days,
            approvers=list(policy.approvers),
            stage=0,
            state=RequestState.PENDING,
            deadline=now + dt.timedelta(days=policy.decide_within_days),
            created_at=now,
            idempotency_key=idempotency_key,
            idempotency_digest=idempotency_digest,
        )
        return _opened(session, origin, request, connector)

    request, _ = replay_or_create(
        session,
        origin,
        key=idempotency_key,
        body=idempotency_digest,
        kind=RequestKind.ACCESS,
        person=lambda: user,
        create=made,
    )
    return request


def open_call(
    session: Session,
    origin: Origin,
    user: User,
    connector: Connector,
    *,
    access_level: AccessLevel,
    justification: str,
    deadline: dt.datetime,
    call: dict[str, Any],
    task_id: str,
    binding_jti: str,
    idempotency_key: str | None,
    idempotency_digest: str | None,
) -> AccessRequest:
    """A call-level approval task (provisioning/requests/calls.py, which checked the
    binding), under :func:`replay_or_create`'s hold: the person asks for one call, the
    connector's chain decides it."""
    if not user.eligible:
        raise _conflict(f"user {user.user_name} is {user.state}: no call may be approved")
    policy = session.get(RequestPolicy, connector.id)
    if policy is None:
        raise _conflict(f"connector {connector.slug} takes no access requests")
    request = AccessRequest(
        user_id=user.id,
        requested_by_id=user.id,
        requested_by=user.user_name,
        connector_id=connector.id,
        access_level=access_level,
        actions=list(dict.fromkeys(i["action"] for i in approvals.items(call))),
        justification=justification,
        duration_days=0,
        approvers=list(policy.approvers),
        stage=0,
        state=RequestState.PENDING,
        deadline=deadline,
        created_at=utcnow(),
        kind=RequestKind.CALL,
        call=call,
        task_id=task_id,
        binding_jti=binding_jti,
        idempotency_key=idempotency_key,
        idempotency_digest=idempotency_digest,
    )
    return _opened(session, origin, request, connector)


def _opened(
    session: Session, origin: Origin, request: AccessRequest, connector: Connector
) -> AccessRequest:
    """Check the chain's approvers, store, audit and tell a new request."""
    for role in request.approvers:
        _check_approver(session, role, request, connector)
    session.add(request)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "request.created",
                "access_request",
                str(request.id),
                user_id=request.user_id,
                reason=request.justification,
                after=request_state(request),
            )
        ],
    )
    _tell(session, "request.created", request, connector)
    return request


def request_state(request: AccessRequest) -> dict[str, Any]:
    return {
        "state": str(request.state),
        "stage": request.stage,
        "connector_id": request.connector_id,
        "access_level": str(request.access_level),
        "actions": request.actions,
        "duration_days": request.duration_days,
        "approvers": list(request.approvers),
        "requested_by": request.requested_by,
        "deadline": request.deadline,
        "expires_at": request.expires_at,
        **(
            {"kind": request.kind, "call": request.call, "approved_until": request.approved_until}
            if request.kind == RequestKind.CALL
            else {}
        ),
    }


def _tell(
    session: Session,
    kind: str,
    request: AccessRequest,
    connector: Connector,
    **extra: Any,
) -> None:
    data: dict[str, Any] = {
        "request": {
            "id": request.id,
            "connector": connector.slug,
            "access_level": str(request.access_level),
            "state": str(request.state),
            "stage": request.stage,
            "approvers": list(request.approvers),
            "requested_by": request.requested_by,
            "justification": request.justification,
            "deadline": request.deadline.isoformat(),
            "expires_at": request.expires_at.isoformat() if request.expires_at else None,
            **(_call_members(request) if request.kind == RequestKind.CALL else {}),
            **extra,
        }
    }
    outbox.enqueue(session, [outbox.Event(kind, request.user_id, data, connector.id)])


def _call_members(request: AccessRequest) -> dict[str, Any]:
    call = request.call or {}
    return {
        "kind": request.kind,
        "action": call.get("action"),
        "actions": request.actions,
        "arguments_digest": call.get("arguments_digest"),
        "task_id": request.task_id,
        "approved_until": request.approved_until.isoformat() if request.approved_until else None,
    }


def approved_until(request: AccessRequest, now: dt.datetime, settings: Settings) -> dt.datetime:
    """The end of an approved call's window: the window the settings give, or the earlier
    time the submission asked for (``requested_access.requested_until``)."""
    until = now + dt.timedelta(minutes=settings.call_approval_minutes)
    asked = (request.call or {}).get("requested_until")
    if asked:
        until = min(until, max(now, dt.datetime.fromisoformat(asked)))
    return until


def _still_bound(session: Session, request: AccessRequest, connector: Connector) -> None:
    """A call is approved only under the policy it was asked under (a changed policy voids
    it: provisioning/entitlements/approvals.py)."""
    for call in approvals.items(request.call or {}):
        rule = approvals.rule(session.connection(), connector.slug, str(call.get("action")))
        if rule is None or not rule.requires_approver or rule.version != call.get("policy_version"):
            raise _conflict(
                f"request {request.id}: the action's policy changed since the call was asked "
                "for; it cannot be approved (the caller asks again)"
            )


# -- deciding -----------------------------------------------------------------------


def _close(request: AccessRequest, state: RequestState, at: dt.datetime, by: str) -> None:
    request.state, request.closed_at, request.closed_by = state, at, by


def _locked(session: Session, request_id: int) -> AccessRequest | None:
    return session.scalar(
        select(AccessRequest)
        .where(AccessRequest.id == request_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _pending(session: Session, request_id: int) -> AccessRequest:
    request = _locked(session, request_id)
    if request is None:
        raise RequestError(f"no access request {request_id}", "not-found")
    if request.state is not RequestState.PENDING:
        raise _conflict(f"request {request.id} is {request.state}: it takes no more decisions")
    if request.deadline <= utcnow():
        raise _conflict(f"request {request.id} passed its deadline and expires")
    return request


def decide(
    session: Session,
    origin: Origin,
    request_id: int,
    approver: User,
    decision: RequestDecision | str,
    comment: str | None = None,
    settings: Settings = DEFAULTS,
) -> tuple[AccessRequest, engine.Diff]:
    """``approver`` decides the request's current stage: a denial closes it, the last
    approval grants it (through the engine) until ``now + duration``."""
    request = _pending(session, request_id)
    connector = session.get(Connector, request.connector_id)
    assert connector is not None  # the request goes with its connector
    role = request.approvers[request.stage]
    expected = _check_approver(session, role, request, connector)
    if approver.id in (request.user_id, request.requested_by_id):
        raise _forbidden("an approver is never the requester nor the person receiving access")
    if approver.id != expected.id:
        raise _forbidden(
            f"stage {request.stage + 1} of request {request.id} is decided by the {role} "
            f"({expected.user_name}), not by {approver.user_name}"
        )
    decision = RequestDecision(decision)
    now = utcnow()
    before = request_state(request)
    diff = engine.Diff()
    call = request.kind == RequestKind.CALL
    last = decision is RequestDecision.APPROVE and request.stage + 1 == len(request.approvers)
    if last and call:
        _still_bound(session, request, connector)
    elif last:
        try:  # the connector, or what the person holds, may have changed since they asked
            check_grant(
                session,
                connector,
                request.access_level,
                request.actions,
                None,
                [request.user_id],
            )
        except SeparationConflict as exc:
            raise RequestError(str(exc), "separation", "connector") from None
        except MappingError as exc:
            raise _conflict(f"request {request.id} cannot be granted now: {exc}") from None
    session.add(
        RequestStep(
            request_id=request.id,
            stage=request.stage,
            role=Approver(role),
            approver_id=approver.id,
            approver=approver.user_name,
            decision=decision,
            comment=comment,
            decided_at=now,
        )
    )
    if decision is RequestDecision.DENY:
        _close(request, RequestState.DENIED, now, approver.user_name)
    elif request.stage + 1 < len(request.approvers):
        request.stage += 1
    else:
        _close(request, RequestState.APPROVED, now, approver.user_name)
        if call:  # one call's approval: no access is granted (provisioning/requests/calls.py)
            request.approval_id = "apr_" + secrets.token_urlsafe(24)
            request.approved_until = approved_until(request, now, settings)
            if "items" in (request.call or {}):  # each item its own approval
                each = [
                    {**i, "approval_id": f"{request.approval_id}.{secrets.token_urlsafe(12)}"}
                    for i in approvals.items(request.call or {})
                ]
                request.call = {**(request.call or {}), "items": each}
        else:
            request.granted_at = now
            request.expires_at = now + dt.timedelta(days=request.duration_days)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "request.decided",
                "access_request",
                str(request.id),
                user_id=request.user_id,
                reason=comment,
                before=before,
                after={
                    **request_state(request),
                    "decision": str(decision),
                    "role": role,
                    "approver": approver.user_name,
                    "approver_id": str(approver.id),
                },
            )
        ],
    )
    _tell(
        session,
        "request.decided",
        request,
        connector,
        decision=str(decision),
        role=role,
        approver=approver.user_name,
    )
    if request.state is not RequestState.PENDING:
        callbacks.tell(session, request, settings)
    if request.state is RequestState.APPROVED and not call:
        diff = engine.apply(session, engine.Affected.users(request.user_id), origin)
    return request, diff


def cancel(
    session: Session, origin: Origin, request_id: int, person: User, reason: str | None = None
) -> AccessRequest:
    """The requester (or the person it is for) withdraws a pending request."""
    request = _pending(session, request_id)
    if person.id not in (request.requested_by_id, request.user_id):
        raise _forbidden(f"only who asked ({request.requested_by}) may cancel request {request.id}")
    return withdraw(session, origin, request, person.user_name, reason)


def withdraw(
    session: Session, origin: Origin, request: AccessRequest, by: str, reason: str | None
) -> AccessRequest:
    """Cancel a pending request (locked, checked by the caller): audited, told."""
    connector = session.get(Connector, request.connector_id)
    assert connector is not None
    before = request_state(request)
    _close(request, RequestState.CANCELLED, utcnow(), by)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "request.cancelled",
                "access_request",
                str(request.id),
                user_id=request.user_id,
                reason=reason,
                before=before,
                after=request_state(request),
            )
        ],
    )
    _tell(session, "request.decided", request, connector, decision="cancel")
    callbacks.tell(session, request)
    return request


def lapse(session: Session, origin: Origin, now: dt.datetime | None = None) -> int:
    """Expire every pending request whose deadline passed; how many."""
    now = now or utcnow()
    due = session.scalars(
        select(AccessRequest)
        .where(AccessRequest.state == RequestState.PENDING, AccessRequest.deadline <= now)
        .order_by(AccessRequest.id)
        .with_for_update()
    ).all()
    slugs = dict(session.execute(select(Connector.id, Connector.slug)).all())
    entries: list[Entry] = []
    events: list[outbox.Event] = []
    for request in due:
        before = request_state(request)
        _close(request, RequestState.EXPIRED, now, origin.actor)
        entries.append(
            Entry(
                "request.expired",
                "access_request",
                str(request.id),
                user_id=request.user_id,
                reason="no decision before the deadline",
                before=before,
                after=request_state(request),
            )
        )
        data = {
            "request": {
                "id": request.id,
                "connector": slugs.get(request.connector_id),
                "state": str(request.state),
                "decision": "expire",
            }
        }
        events.append(outbox.Event("request.decided", request.user_id, data, request.connector_id))
        callbacks.tell(session, request)
    session.flush()
    if entries:
        record(session, origin, entries)
        outbox.enqueue(session, events)
    return len(due)
