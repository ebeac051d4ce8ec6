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
PEP re-evaluates with the approval at ``context.approval``; :func:`applies` allows the call
only when the approval's record (one indexed read by its id) is approved, unexpired and
bound to exactly this person, connector, tool, argument digest and policy version.
Everything else is ignored, and the answer is ``false`` again with why.
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
        return jwt.encode({"alg": ALGORITHM, "typ": "JWT"}, claims, self.key), expires

    def read(self, token: Any) -> dict[str, Any]:
        """The claims of a binding token this service issued (expiry is checked by the
        caller: an expired one is its own error); :class:`BindingError` otherwise."""
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise BindingError("denial.binding_token must be the token the denial carried")
        try:
            claims = jwt.decode(token, self.key, algorithms=[ALGORITHM]).claims
        except (JoseError, ValueError, TypeError):
            raise BindingError("denial.binding_token is not one this service issued") from None
        if claims.get("iss") != ISSUER or claims.get("aud") != AUDIENCE:
            raise BindingError("denial.binding_token was not issued for this service")
        texts = ("sub", "jti", "denial_expires_at", "connector", "action")
        if not all(isinstance(claims.get(n), str) for n in (*texts, *_DIGESTS)) or not (
            isinstance(claims.get("exp"), int)
        ):
            raise BindingError("denial.binding_token is malformed")
        return claims


_DIGESTS = ("arguments_digest", "policy_version")


@dataclass(frozen=True)
class Calls:
    """What the decision path needs to make a denial requestable: the signer (read when a
    denial first needs it), and the Access Request Endpoint the denial names."""

    signer: Callable[[], Signer]
    endpoint: str


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


def applies(connection: Connection, presented: Any, binding: Binding, now: dt.datetime) -> Verdict:
    """Whether the approval at ``context.approval`` allows exactly this call now."""
    if not isinstance(presented, dict) or not isinstance(presented.get("id"), str):
        return _UNVERIFIABLE
    ident = presented["id"]
    if not 1 <= len(ident) <= 64:
        return _UNVERIFIABLE
    row = connection.execute(
        select(
            AccessRequest.kind,
            AccessRequest.state,
            AccessRequest.user_id,
            AccessRequest.approved_until,
            AccessRequest.call,
        ).where(AccessRequest.approval_id == ident)
    ).first()
    if row is None or row.kind != RequestKind.CALL or row.state != RequestState.APPROVED:
        return _UNVERIFIABLE
    call = row.call or {}
    approval = {"id": ident, "approved_until": timestamp(row.approved_until)}
    same = (
        str(row.user_id) == binding.user_id
        and call.get("connector") == binding.connector
        and call.get("action") == binding.action
        and call.get("arguments_digest") == binding.arguments_digest
    )
    if not same:
        return Verdict(False, "out_of_scope", "request")
    if row.approved_until <= now or call.get("policy_version") != binding.policy_version:
        return Verdict(False, "approval_expired", "request")
    return Verdict(True, "approved", "none", approval)
