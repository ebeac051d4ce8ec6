"""Call-level approvals in the decision path: the signed binding a requestable denial carries,
and whether an approval presented at re-evaluation covers exactly the call asked about.

An action whose org policy is ``needs_approval`` and that ``requires_approver`` is not
settled by the caller's own click: the connector's request-policy chain (owner and/or
manager, provisioning/requests/workflow.py) approves each call. Its evaluation answers
``false`` with ``context.access_request`` (the draft OpenID AuthZEN Access Request &
Approval profile): an ``expires_at`` a few minutes ahead and a ``binding_token``, an HS256
JWT over the person, the connector, the tool, a digest of the call's arguments and the
policy version. Nothing is stored for it: the decision path stays read-only.

An approval is bound to the same five things and lasts until its ``approved_until``. The
completed task carries it with ``state``, an HS256 JWS with the same key
(:meth:`Signer.state`): the approval and task ids and the binding, addressed to this PDP.
The PEP re-evaluates with the approval at ``context.approval``; :func:`applies` allows the
call only when its ``state``, if present, is one we signed for this PDP, unexpired and for
the same approval and task, and the approval's record (one indexed read by its id) is
approved, unexpired and bound to exactly this person, connector, tool, argument digest and
policy version: the state is proof, never a grant by itself. Everything else is ignored,
and the answer is ``false`` again with why. A bundled task's items (``call["items"]``)
are approved each under its own id, ``<the task's approval id>.<its own part>``: the
record is found by the first part, the item by the whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from sqlalchemy import Connection, select

from provisioning.connectors.models import Action, Connector, Policy
from provisioning.requests.models import AccessRequest, RequestKind, RequestPolicy, RequestState

CAPABILITY = "urn:openid:authzen:capability:access-request"
TEMPLATE = "call_approval"
ISSUER = "urn:provisioning:pdp"
AUDIENCE = "urn:provisioning:access-requests"
ALGORITHM = "HS256"
STATE_TYPE = "approval-state+jwt"
"""The ``typ`` of an ``approval.state``: never read as a binding token, nor one as it."""
BINDING_MINUTES = 10
"""How long a requestable denial may be turned into a request."""
CONTEXT_MEMBERS = ("arguments",)
"""The authorization-relevant context: the call's arguments (``context.arguments``)."""


class BindingError(ValueError):
    """A binding token this service did not issue, or issued for something else."""


def arguments_digest(context: dict[str, Any]) -> str:
    """SHA-256 (hex) of the call's arguments in canonical JSON (sorted keys, no whitespace);
    absent arguments digest differently from ``null`` or ``{}``."""
    if "arguments" not in context:
        text = ""
    else:
        text = json.dumps(
            context["arguments"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def policy_version(org_policy: Any, requires_approver: bool, approvers: Any) -> str:
    """A digest of what makes a call need an approver, and who: a change to any of them
    voids every binding and approval made under the old one."""
    shape = [str(org_policy), bool(requires_approver), list(approvers or [])]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Rule:
    """What the decision path needs to know of an action that may need an approver."""

    requires_approver: bool
    requestable: bool  # the connector has a request policy: somebody can approve
    version: str


def rules(connection: Connection, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Rule]:
    """The rule of each (connector slug, action) in one statement for them all."""
    wanted = set(pairs)
    if not wanted:
        return {}
    rows = connection.execute(
        select(
            Connector.slug,
            Action.name,
            Action.org_policy,
            Action.requires_approver,
            RequestPolicy.approvers,
        )
        .join(Action, Action.connector_id == Connector.id)
        .outerjoin(RequestPolicy, RequestPolicy.connector_id == Connector.id)
        .where(Connector.slug.in_({s for s, _ in wanted}), Action.name.in_({a for _, a in wanted}))
    )
    found = {}
    for row in rows:
        if (row.slug, row.name) in wanted:
            found[row.slug, row.name] = Rule(
                bool(row.requires_approver) and row.org_policy == Policy.NEEDS_APPROVAL,
                row.approvers is not None,
                policy_version(row.org_policy, row.requires_approver, row.approvers),
            )
    return found


def rule(connection: Connection, slug: str, action: str) -> Rule | None:
    return rules(connection, [(slug, action)]).get((slug, action))


# -- the binding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """What one call is: who, where, which tool, with which arguments, under which policy."""

    user_id: str
    connector: str
    action: str
    arguments_digest: str
    policy_version: str

    def claims(self) -> dict[str, Any]:
        return {
            "sub": self.user_id,
            "connector": self.connector,
            "action": self.action,
            "arguments_digest": self.arguments_digest,
            "policy_version": self.policy_version,
        }


class Signer:
    """Issues and reads binding tokens with the service's key (PROVISIONING_APPROVAL_SECRET,
    or one made once and kept in the database)."""

    def __init__(self, secret: str) -> None:
        self.key = OctKey.import_key(hashlib.sha256(secret.encode()).digest())
        self.kid = self.key.thumbprint()  # RFC 7638: names the key, never reveals it

    def issue(
        self, binding: Binding, evaluation_id: str, now: dt.datetime
    ) -> tuple[str, dt.datetime]:
        """A binding token for a requestable denial, and the denial's ``expires_at``."""
        expires = (now + dt.timedelta(minutes=BINDING_MINUTES)).replace(microsecond=0)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_urlsafe(18),
            "evaluation_id": evaluation_id,
            "denial_expires_at": timestamp(expires),
            "binding_context_members": list(CONTEXT_MEMBERS),
            **binding.claims(),
        }
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": self.kid}
        return jwt.encode(header, claims, self.key), expires

    def read(self, token: Any) -> dict[str, Any]:
        """The claims of a binding token this service issued (expiry is checked by the
        caller: an expired one is its own error); :class:`BindingError` otherwise."""
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise BindingError("denial.binding_token must be the token the denial carried")
        try:
            decoded = jwt.decode(token, self.key, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            raise BindingError("denial.binding_token is not one this service issued") from None
        if decoded.header.get("kid") != self.kid or decoded.header.get("typ") == STATE_TYPE:
            raise BindingError("denial.binding_token is not one this service issued")
        claims = decoded.claims
        if claims.get("iss") != ISSUER or claims.get("aud") != AUDIENCE:
            raise BindingError("denial.binding_token was not issued for this service")
        texts = ("sub", "jti", "denial_expires_at", "connector", "action")
        if not all(isinstance(claims.get(n), str) for n in (*texts, *_DIGESTS)) or not (
            isinstance(claims.get("exp"), int)
        ):
            raise BindingError("denial.binding_token is malformed")
        return claims

    def state(self, request: AccessRequest, audience: str, item: int | None = None) -> str:
        """The ``approval.state`` of an approved call (of a bundle's ``item``): issued by the
        Access Request Service (``iss``) to the PDP ``audience`` (its
        ``policy_decision_point``), until ``approved_until`` (``exp``); the same for every
        read of the task."""
        assert request.approval_id and request.approved_until and request.task_id
        call = request.call or {}
        one = items(call)[item] if item is not None else call
        approved_at = request.closed_at or request.approved_until
        claims = {
            "iss": AUDIENCE,
            "aud": audience,
            "exp": int(request.approved_until.timestamp()),
            "approval_id": one.get("approval_id", request.approval_id),
            "task_id": request.task_id,
            "evaluation_id": one.get("evaluation_id"),
            "approved_at": int(approved_at.timestamp()),
            **approved(request.user_id, call, one).claims(),
        }
        header = {"alg": ALGORITHM, "typ": STATE_TYPE, "kid": self.kid}
        return jwt.encode(header, claims, self.key)

    def read_state(self, token: Any, audience: str) -> dict[str, Any]:
        """The claims of an ``approval.state`` we signed for ``audience`` (expiry is checked
        by the caller); :class:`BindingError` otherwise."""
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise BindingError("approval.state is not one this service issued")
        try:
            decoded = jwt.decode(token, self.key, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            raise BindingError("approval.state is not one this service issued") from None
        header, claims = decoded.header, decoded.claims
        if header.get("typ") != STATE_TYPE or header.get("kid") != self.kid:
            raise BindingError("approval.state is not one this service issued")
        if claims.get("iss") != AUDIENCE or claims.get("aud") != audience:
            raise BindingError("approval.state was not issued for this PDP")
        texts = ("sub", "connector", "action", "approval_id", "task_id", *_DIGESTS)
        if not all(isinstance(claims.get(n), str) for n in texts) or not (
            isinstance(claims.get("exp"), int)
        ):
            raise BindingError("approval.state is malformed")
        return claims


_DIGESTS = ("arguments_digest", "policy_version")


@dataclass(frozen=True)
class Calls:
    """What the decision path needs to make a denial requestable and to verify an
    ``approval.state``: the signer (read when first needed), the Access Request Endpoint
    the denial names, and this PDP's identifier (the state's audience)."""

    signer: Callable[[], Signer]
    endpoint: str
    pdp: str


def items(call: dict[str, Any]) -> list[dict[str, Any]]:
    """The calls a task asks for: a bundle's ``items``, or the one call it is."""
    bundled = call.get("items")
    return bundled if isinstance(bundled, list) else [call]


def approved(user_id: Any, call: dict[str, Any], one: dict[str, Any]) -> Binding:
    """The binding of one call of a task (``one``: the task's call or one of its items)."""
    return Binding(
        str(user_id),
        str(call.get("connector")),
        str(one.get("action")),
        str(one.get("arguments_digest")),
        str(one.get("policy_version")),
    )


def bound(claims: dict[str, Any]) -> Binding:
    return Binding(
        claims["sub"],
        claims["connector"],
        claims["action"],
        claims["arguments_digest"],
        claims["policy_version"],
    )


def timestamp(moment: dt.datetime) -> str:
    """RFC 3339 in UTC, to the second."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# -- an approval presented at re-evaluation ---------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Whether a presented approval covers the call: ``allowed``, or the profile's reason
    (``approval_expired``, ``out_of_scope``, ``approval_unverifiable``) and next action."""

    allowed: bool
    reason: str
    next_action: str
    approval: dict[str, Any] | None = None


_UNVERIFIABLE = Verdict(False, "approval_unverifiable", "none")


def applies(
    connection: Connection,
    presented: Any,
    binding: Binding,
    now: dt.datetime,
    calls: Calls | None = None,
) -> Verdict:
    """Whether the approval at ``context.approval`` allows exactly this call now: its
    ``state``, when present, verified with ``calls``' signer for ``calls.pdp`` and naming
    this approval, and the approval's record, whatever the state says."""
    if not isinstance(presented, dict) or not isinstance(presented.get("id"), str):
        return _UNVERIFIABLE
    ident = presented["id"]
    if not 1 <= len(ident) <= 64:
        return _UNVERIFIABLE
    # A bundle's item approval is its task's approval id, a dot and the item's own part.
    task_approval, dot, _ = ident.partition(".")
    sealed: dict[str, Any] | None = None
    if "state" in presented:
        if calls is None:
            return _UNVERIFIABLE
        try:
            sealed = calls.signer().read_state(presented["state"], calls.pdp)
        except BindingError:
            return _UNVERIFIABLE
        if sealed["approval_id"] != ident:
            return _UNVERIFIABLE
    row = connection.execute(
        select(
            AccessRequest.kind,
            AccessRequest.state,
            AccessRequest.user_id,
            AccessRequest.task_id,
            AccessRequest.approved_until,
            AccessRequest.call,
        ).where(AccessRequest.approval_id == task_approval)
    ).first()
    if row is None or row.kind != RequestKind.CALL or row.state != RequestState.APPROVED:
        return _UNVERIFIABLE
    call = row.call or {}
    if "items" in call:  # only an item's own approval id names it
        one = next((i for i in items(call) if i.get("approval_id") == ident), None)
    else:
        one = None if dot else call
    if one is None:
        return _UNVERIFIABLE
    recorded = approved(row.user_id, call, one)
    if sealed is not None and (sealed["task_id"] != row.task_id or bound(sealed) != recorded):
        return _UNVERIFIABLE  # signed for another task or call than the record's
    approval = {"id": ident, "approved_until": timestamp(row.approved_until)}
    same = (
        recorded.user_id == binding.user_id
        and recorded.connector == binding.connector
        and recorded.action == binding.action
        and recorded.arguments_digest == binding.arguments_digest
    )
    if not same:
        return Verdict(False, "out_of_scope", "request")
    lapsed = row.approved_until <= now or (sealed is not None and sealed["exp"] <= now.timestamp())
    if lapsed or recorded.policy_version != binding.policy_version:
        return Verdict(False, "approval_expired", "request")
    return Verdict(True, "approved", "none", approval)
