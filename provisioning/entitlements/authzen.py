"""AuthZEN 1.0 in our model: requests read into questions for the one decision engine,
decisions answered as AuthZEN decisions, and the subject, resource and action searches.

The mapping (docs/authzen.md): a ``subject`` of type ``user`` or ``identity`` is a person,
named by id, userName, Okta id (``externalId``) or email. A ``resource`` is a connector
(``connector``, or the connector's own ``resource_type``, by slug), one tool of an MCP
server (``tool``, the COAZ-MCP ``tools/call`` mapping) or an MCP server as a whole
(``mcp_server``, by its resource URI). Every answer comes from
:func:`provisioning.entitlements.decisions.decide` (a batch, or a search's candidates:
``decide_many``, set-wise); ``decision`` is ``true`` only for ``allow``, and
``context.reason`` says why in a code. Nothing here writes: the edge records last uses.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import itertools
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, and_, func, select

from provisioning.connectors.models import Action, Connector, Interface
from provisioning.database import utcnow
from provisioning.entitlements import approvals, decisions
from provisioning.entitlements.models import Grant
from provisioning.entitlements.policy import Decision
from provisioning.identity.models import User

SUBJECT_TYPES = frozenset({"user", "identity"})
CONNECTOR, TOOL, MCP_SERVER = "connector", "tool", "mcp_server"
TOOL_CALL = "tools/call"
# MCP methods on a server as a whole: allowed while the person may use the connector.
SERVER_METHODS = ("initialize", "prompts/list", "resources/list", "tools/list")
MAX_EVALUATIONS = 1000
"""The most evaluations one Access Evaluations request may carry (400 beyond it)."""
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_TEXT = 1000
CHUNK = 200
"""Search candidates read, and decided, at a time."""
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")

# Why a decision is not an allow, as a code: the first pattern (in the order the engine
# checks them) found in its reasons.
_DENIALS = (
    ("unknown user", "unknown_subject"),
    ("unknown connector", "unknown_resource"),
    ("user is ", "user_inactive"),
    (" is disabled", "connector_disabled"),
    ("desktop extensions are never available", "interface_not_offered"),
    (" is not offered on ", "interface_not_offered"),
    ("no grant of connector", "no_grant"),
    (" offers no ", "action_not_offered"),
    ("no grant includes action", "action_not_granted"),
    (" access does not allow ", "access_level_insufficient"),
)
# Codes of denials that come after the person's use of the connector was established.
_ACTION_DENIALS = frozenset(
    {"action_not_offered", "action_not_granted", "access_level_insufficient", "unknown_action"}
)


class Invalid(ValueError):
    """A request the API cannot read (400): the message says what is wrong."""


# -- reading requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class Entity:
    type: str
    id: str | None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Act:
    name: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    subject: Entity
    action: Act
    resource: Entity
    context: dict[str, Any] = field(default_factory=dict)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{where} must be a string")
    if not value or len(value) > MAX_TEXT:
        raise Invalid(f"{where} must be 1 to {MAX_TEXT} characters")
    if "\x00" in value:
        raise Invalid(f"{where} must not hold a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise Invalid(f"{where} is not valid Unicode text (a lone surrogate)") from None
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be an object")
    return value


def entity(value: Any, where: str, *, with_id: bool = True) -> Entity:
    """A subject or resource; its ``id`` is required unless ``with_id`` is false (the
    entity searched for), and then ignored."""
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be an object with type and id")
    if "type" not in value:
        raise Invalid(f"{where}.type is required")
    kind = _text(value["type"], f"{where}.type")
    ident = None
    if with_id:
        if "id" not in value:
            raise Invalid(f"{where}.id is required")
        ident = _text(value["id"], f"{where}.id")
    elif "id" in value and value["id"] is not None and not isinstance(value["id"], str):
        raise Invalid(f"{where}.id must be a string")
    return Entity(kind, ident, _object(value.get("properties"), f"{where}.properties"))


def act(value: Any, where: str = "action") -> Act:
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be an object with a name")
    if "name" not in value:
        raise Invalid(f"{where}.name is required")
    return Act(_text(value["name"], f"{where}.name"), _object(value.get("properties"), where))


def _required(document: dict[str, Any], name: str) -> Any:
    if document.get(name) is None:
        raise Invalid(f"{name} is required")
    return document[name]


def evaluation(document: Any) -> Request:
    """An Access Evaluation request; :class:`Invalid` if it is not one."""
    if not isinstance(document, dict):
        raise Invalid("the request body must be a JSON object")
    return Request(
        entity(_required(document, "subject"), "subject"),
        act(_required(document, "action")),
        entity(_required(document, "resource"), "resource"),
        _object(document.get("context"), "context"),
    )


@dataclass(frozen=True)
class Batch:
    """An Access Evaluations request: each evaluation merged with the defaults (or why it
    cannot be evaluated), and the semantic to run them with."""

    items: list[Request | Invalid]
    semantic: str


def batch(document: Any) -> Batch | None:
    """An Access Evaluations request; None when it carries no evaluations (it is then a
    single evaluation). :class:`Invalid` for what is wrong with the request as a whole."""
    if not isinstance(document, dict):
        raise Invalid("the request body must be a JSON object")
    items = document.get("evaluations")
    if items is None or items == []:
        return None
    if not isinstance(items, list):
        raise Invalid("evaluations must be an array")
    if len(items) > MAX_EVALUATIONS:
        raise Invalid(f"at most {MAX_EVALUATIONS} evaluations in one request ({len(items)} sent)")
    options = _object(document.get("options"), "options")
    semantic = options.get("evaluations_semantic", SEMANTICS[0])
    if semantic not in SEMANTICS:
        raise Invalid(f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}")
    # The defaults are read once: a malformed one is the whole request's fault.
    defaults = {
        "subject": entity(document["subject"], "subject") if "subject" in document else None,
        "action": act(document["action"]) if "action" in document else None,
        "resource": entity(document["resource"], "resource") if "resource" in document else None,
        "context": _object(document.get("context"), "context"),
    }
    return Batch([_merged(item, i, defaults) for i, item in enumerate(items)], semantic)


def _merged(item: Any, index: int, defaults: dict[str, Any]) -> Request | Invalid:
    """One evaluation, each entity given whole or taken whole from the defaults."""
    where = f"evaluations[{index}]"
    try:
        if not isinstance(item, dict):
            raise Invalid(f"{where} must be an object")
        parts = {
            "subject": entity(item["subject"], f"{where}.subject") if "subject" in item else None,
            "action": act(item["action"], f"{where}.action") if "action" in item else None,
            "resource": (
                entity(item["resource"], f"{where}.resource") if "resource" in item else None
            ),
        }
        for name, value in parts.items():
            if value is None and defaults[name] is None:
                raise Invalid(f"{where}.{name} is required (there is no default {name})")
        context = _object(item["context"], f"{where}.context") if "context" in item else None
        return Request(
            parts["subject"] or defaults["subject"],
            parts["action"] or defaults["action"],
            parts["resource"] or defaults["resource"],
            defaults["context"] if context is None else context,
        )
    except Invalid as exc:
        return exc


# -- deciding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One evaluation's decision in our terms, and what the edge records of it."""

    decision: Decision
    reason: str
    reasons: tuple[str, ...]
    evaluation_id: str
    connector: str | None = None
    action: str | None = None
    grant_id: int | None = None
    last_used_at: dt.datetime | None = None
    agent: str | None = None
    error: str | None = None
    requires_approver: bool = False  # the engine's: see decisions.Answer
    # Context members of a call-level approval (approvals.py): ``access_request``,
    # ``approval``, ``next_action``, ``evaluated_at``; set, no confirmation is asked for.
    call: dict[str, Any] | None = None

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW

    def answer(self) -> dict[str, Any]:
        """The AuthZEN decision object."""
        context: dict[str, Any] = {
            "evaluation_id": self.evaluation_id,
            "reason": self.reason,
            "outcome": str(self.decision),
            "message": "; ".join(self.reasons),
        }
        if self.error is not None:
            context["error"] = {"status": 400, "message": self.error}
        if self.call is not None:
            context.update(self.call)
        elif self.decision is Decision.NEEDS_APPROVAL:
            # What the enforcement point must do before the call may go ahead.
            context["approval"] = {
                "type": "confirmation",
                "by": "subject",
                "connector": self.connector,
                "action": self.action,
            }
        return {"decision": self.allowed, "context": context}


def failed(error: Invalid) -> Outcome:
    """The answer for an evaluation of a batch that cannot be read: false, with why."""
    return Outcome(Decision.DENY, "invalid_request", (str(error),), _new_id(), error=str(error))


def _new_id() -> str:
    return str(uuid.uuid4())


def reason_code(answer: decisions.Answer) -> str:
    if answer.decision is not Decision.DENY:
        return str(answer.decision)
    for pattern, code in _DENIALS:
        for reason in answer.reasons:
            if pattern in reason:
                if code == "action_not_granted" and any(
                    "is not catalogued" in r for r in answer.reasons
                ):
                    return "unknown_action"
                return code
    return "connector_not_approved"  # the governance guards' own reasons


def agent_of(request: Request) -> str | None:
    """The agent acting for the person: ``subject.properties.act`` (an RFC 8693 ``act``
    claim, or its ``sub``) or ``context.agent``."""
    acting = request.subject.properties.get("act")
    if isinstance(acting, dict):
        acting = acting.get("sub") or acting.get("client_id")
    if acting is None:
        acting = request.context.get("agent")
    if isinstance(acting, str) and acting:
        return acting[:MAX_TEXT]
    return None


@dataclass(frozen=True)
class Target:
    """A resource and action read into our terms: a connector, an action of it (None: a
    method on the MCP server as a whole), or why there is none."""

    connector: str | None
    action: str | None
    why: tuple[str, str] | None = None  # (code, reason) when there is no target


def named_server(resource: Entity, context: dict[str, Any]) -> tuple[str, str] | None:
    """The MCP server a tool's request names: ``("connector", slug)`` or ``("mcp_server",
    resource URI)``, from the resource's properties or else the context; None when none."""
    for source in (resource.properties, context):
        for key in ("connector", "mcp_server"):
            value = source.get(key)
            if isinstance(value, str):
                return key, value
    return None


@dataclass(frozen=True)
class _Asked:
    """An evaluation read into a question for the engine, waiting for its answer."""

    ident: str
    target: Target
    action: str
    interface: Interface
    evaluation_id: str
    agent: str | None


class Decider:
    """Decides AuthZEN requests on one connection (a hot read) with the one engine.

    A batch (or a search's page of candidates) is decided set-wise: the connectors its
    resources name, the people its subjects name and then every decision are each read
    in a few statements for the whole batch (:meth:`outcomes`), never one per evaluation.
    What is read is kept for the rest of the request.
    """

    def __init__(
        self,
        connection: Connection,
        default_interface: Interface,
        calls: approvals.Calls | None = None,
    ) -> None:
        self.connection = connection
        self.default_interface = default_interface
        self.calls = calls  # None: no denial is requestable (no Access Request Endpoint)
        self._people: dict[str, str | None] = {}
        # Connector slugs (the first two, in slug order) by what names them.
        self._by_uri: dict[str, list[str]] = {}
        self._by_tool: dict[str, list[str]] = {}
        self._by_type: dict[tuple[str, str], list[str]] = {}
        self._types: dict[str, bool] = {}

    # -- resolving ------------------------------------------------------------------

    def person(self, ident: str) -> str | None:
        """The id of the person ``ident`` names: our id, userName, Okta id or email."""
        self.people([ident])
        return self._people[ident]

    def people(self, idents: Iterable[str]) -> None:
        """Find the people ``idents`` name, each key in one statement for them all (each on
        its own index: an OR of the three scanned users): an id as it is, then userName,
        Okta id, email; a key two people share names nobody."""
        wanted = set()
        for ident in idents:
            if ident in self._people:
                continue
            try:
                self._people[ident] = str(uuid.UUID(ident))
            except ValueError:
                wanted.add(ident)
        live = User.deleted_at.is_(None)
        for column, key in (
            (User.user_name_key, str.lower),
            (User.external_id, str),
            (func.lower(User.email), str.lower),
        ):
            if not wanted:
                break
            keys: dict[str, set[str]] = defaultdict(set)
            for ident in wanted:
                keys[key(ident)].add(ident)
            found: dict[str, set[Any]] = defaultdict(set)
            rows = self.connection.execute(
                select(User.id, column.label("key")).where(column.in_(keys), live)
            )
            for row in rows:
                found[row.key].add(row.id)
            for value, ids in found.items():
                for ident in keys.get(value, ()):
                    self._people[ident] = str(next(iter(ids))) if len(ids) == 1 else None
                    wanted.discard(ident)
        for ident in wanted:
            self._people[ident] = None

    def interface(self, request: Request) -> Interface:
        value = request.context.get("interface")
        if value is None:
            return self.default_interface
        try:
            return Interface(value)
        except ValueError:
            names = ", ".join(i.value for i in Interface)
            raise Invalid(f"context.interface must be one of {names}") from None

    def prefetch(self, requests: Iterable[Request]) -> None:
        """Read at once every connector lookup the requests' resources will need: by
        resource URI, by tool name, by slug and type (at most four statements)."""
        uris, tools, typed = set(), set(), set()
        for request in requests:
            resource = request.resource
            if resource.type == MCP_SERVER and resource.id is not None:
                uris.add(resource.id)
            elif resource.type == TOOL:
                named = named_server(resource, request.context)
                if named is None and resource.id is not None:
                    tools.add(resource.id)
                elif named is not None and named[0] == "mcp_server":
                    uris.add(named[1])
            elif resource.type != CONNECTOR and resource.id is not None:
                typed.add((resource.type, resource.id))
        uris.difference_update(self._by_uri)
        tools.difference_update(self._by_tool)
        typed.difference_update(self._by_type)
        if uris:
            self._collect(
                self._by_uri,
                uris,
                select(Connector.resource_uri, Connector.slug).where(
                    Connector.resource_uri.in_(uris)
                ),
            )
        if tools:
            self._collect(
                self._by_tool,
                tools,
                select(Action.name, Connector.slug)
                .join(Action, Action.connector_id == Connector.id)
                .where(Action.name.in_(tools)),
            )
        if typed:
            pairs = select(Connector.resource_type, Connector.slug).where(
                Connector.slug.in_({slug for _, slug in typed}),
                Connector.resource_type.in_({kind for kind, _ in typed}),
            )
            found = {(kind, slug) for kind, slug in self.connection.execute(pairs)}
            for pair in typed:
                self._by_type[pair] = [pair[1]] if pair in found else []
            kinds = {kind for kind, _ in typed if not self._by_type[kind, _]}
            kinds.difference_update(self._types, (CONNECTOR, TOOL, MCP_SERVER))
            if kinds:
                known = set(
                    self.connection.scalars(
                        select(Connector.resource_type)
                        .where(Connector.resource_type.in_(kinds))
                        .distinct()
                    )
                )
                self._types.update((kind, kind in known) for kind in kinds)

    def _collect(self, into: dict[str, list[str]], keys: set[str], statement: Any) -> None:
        """Slugs by key from ``statement``'s (key, slug) rows: the first two in slug order."""
        for key in keys:
            into[key] = []
        for key, slug in self.connection.execute(statement.order_by(Connector.slug)):
            found = into[key]
            if len(found) < 2:
                found.append(slug)

    def _connector_where(self, *conditions: Any) -> list[str]:
        return list(
            self.connection.scalars(
                select(Connector.slug).where(*conditions).order_by(Connector.slug).limit(2)
            )
        )

    def _slugs_by_uri(self, uri: str) -> list[str]:
        if uri not in self._by_uri:
            self._by_uri[uri] = self._connector_where(Connector.resource_uri == uri)
        return self._by_uri[uri]

    def server(self, resource: Entity, context: dict[str, Any]) -> str | bool | None:
        """The connector an MCP server names (resource properties or context), None when
        none is named, False when the one named is unknown."""
        named = named_server(resource, context)
        if named is None:
            return None
        key, value = named
        if key == "connector":
            return value
        found = self._slugs_by_uri(value)
        return found[0] if found else False

    def target(self, request: Request) -> Target:
        """The connector and action the request's resource and action name; :class:`Invalid`
        for a resource type no connector has."""
        resource, action = request.resource, request.action.name
        if resource.type == CONNECTOR:
            return Target(resource.id, action)
        if resource.type == MCP_SERVER:
            found = self._slugs_by_uri(resource.id or "")
            if not found:
                return Target(None, None, ("unknown_resource", f"no MCP server {resource.id}"))
            if action not in SERVER_METHODS:
                return Target(
                    found[0], None, ("unknown_action", f"{action} is not a method on a server")
                )
            return Target(found[0], None)
        if resource.type == TOOL:
            if action != TOOL_CALL:
                return Target(None, None, ("unknown_action", f"a tool is called: {TOOL_CALL}"))
            named = self.server(resource, request.context)
            if named is False:
                return Target(None, None, ("unknown_resource", "no such MCP server"))
            if named is not None:
                return Target(str(named), resource.id)
            tool = resource.id or ""
            if tool not in self._by_tool:
                self._by_tool[tool] = list(
                    self.connection.scalars(
                        select(Connector.slug)
                        .join(Action, Action.connector_id == Connector.id)
                        .where(Action.name == tool)
                        .order_by(Connector.slug)
                        .limit(2)
                    )
                )
            found = self._by_tool[tool]
            if len(found) != 1:
                why = "no connector has" if not found else "several connectors have"
                return Target(
                    None,
                    None,
                    (
                        "unknown_resource" if not found else "ambiguous_tool",
                        f"{why} a tool {resource.id}: name its server in "
                        "resource.properties.mcp_server",
                    ),
                )
            return Target(found[0], resource.id)
        pair = (resource.type, resource.id or "")
        if pair not in self._by_type:
            self._by_type[pair] = self._connector_where(
                Connector.slug == resource.id, Connector.resource_type == resource.type
            )
        found = self._by_type[pair]
        if not found:
            if not self.known_type(resource.type):
                raise Invalid(f"resource.type {resource.type} is not one this PDP knows")
            return Target(
                None, None, ("unknown_resource", f"no resource {resource.id} of {resource.type}")
            )
        return Target(found[0], action)

    def known_type(self, kind: str) -> bool:
        if kind in (CONNECTOR, TOOL, MCP_SERVER):
            return True
        if kind not in self._types:
            self._types[kind] = bool(self._connector_where(Connector.resource_type == kind))
        return self._types[kind]

    # -- deciding -------------------------------------------------------------------

    def decide(self, request: Request) -> Outcome:
        """The outcome of one evaluation; :class:`Invalid` for an unknown entity type."""
        asked = self._read(request)
        if isinstance(asked, Outcome):
            return asked
        return self.approvals([request], [self._outcome(asked, self.ask_many([asked])[0])])[0]

    def outcomes(self, items: Sequence[Request | Invalid]) -> list[Outcome]:
        """The outcome of each evaluation, in order, decided set-wise; an evaluation that
        cannot be read (or names an unknown entity type) is answered :func:`failed`."""
        self.prefetch(item for item in items if isinstance(item, Request))
        read: list[_Asked | Outcome] = []
        for item in items:
            try:
                if isinstance(item, Invalid):
                    raise item
                read.append(self._read(item))
            except Invalid as exc:
                read.append(failed(exc))
        asked = [r for r in read if isinstance(r, _Asked)]
        answers = iter(self.ask_many(asked))
        found = [r if isinstance(r, Outcome) else self._outcome(r, next(answers)) for r in read]
        return self.approvals(items, found)

    def approvals(
        self, items: Sequence[Request | Invalid], outcomes: list[Outcome]
    ) -> list[Outcome]:
        """Call-level approval (approvals.py) for the ``needs_approval`` outcomes whose action
        requires an approver (the engine says so): one statement for their rules, one read
        per approval shown. Other outcomes cost nothing."""
        asks = [
            (i, item, outcome)
            for i, (item, outcome) in enumerate(zip(items, outcomes, strict=True))
            if isinstance(item, Request)
            and outcome.requires_approver
            and outcome.connector is not None
            and outcome.action is not None
        ]
        if not asks:
            return outcomes
        found = approvals.rules(self.connection, {(o.connector, o.action) for _, _, o in asks})
        now = utcnow()
        for i, item, outcome in asks:
            rule = found.get((outcome.connector, outcome.action))  # type: ignore[arg-type]
            if rule is not None and rule.requires_approver:
                outcomes[i] = self._approver(item, outcome, rule, now)
        return outcomes

    def _approver(
        self, request: Request, outcome: Outcome, rule: approvals.Rule, now: dt.datetime
    ) -> Outcome:
        assert outcome.connector is not None and outcome.action is not None
        binding = approvals.Binding(
            self.person(request.subject.id or "") or "",
            outcome.connector,
            outcome.action,
            approvals.arguments_digest(request.context),
            rule.version,
        )
        call: dict[str, Any] = {"evaluated_at": approvals.timestamp(now)}
        reason, why = "approval_required", "a call of this action needs an approver's yes"
        presented = request.context.get("approval")
        if presented is not None:
            verdict = approvals.applies(self.connection, presented, binding, now, self.calls)
            if verdict.allowed:
                assert verdict.approval is not None
                call["approval"] = verdict.approval
                return replace(
                    outcome,
                    decision=Decision.ALLOW,
                    reason="approved",
                    reasons=(
                        *outcome.reasons,
                        f"approved by {verdict.approval['id']} until "
                        f"{verdict.approval['approved_until']}",
                    ),
                    call=call,
                )
            reason, why = verdict.reason, f"the approval presented does not apply: {verdict.reason}"
            call["next_action"] = verdict.next_action
        if rule.requestable and self.calls is not None and call.get("next_action") != "none":
            token, expires = self.calls.signer().issue(binding, outcome.evaluation_id, now)
            call["access_request"] = {
                "endpoint": self.calls.endpoint,
                "template": approvals.TEMPLATE,
                "expires_at": approvals.timestamp(expires),
                "binding_token": token,
            }
        return replace(outcome, reason=reason, reasons=(*outcome.reasons, why), call=call)

    def _read(self, request: Request) -> _Asked | Outcome:
        """The question an evaluation asks the engine, or its outcome when it needs none."""
        evaluation_id = _new_id()
        agent = agent_of(request)
        if request.subject.type not in SUBJECT_TYPES:
            raise Invalid(f"subject.type must be one of {', '.join(sorted(SUBJECT_TYPES))}")
        interface = self.interface(request)
        target = self.target(request)
        if target.why is not None:
            code, why = target.why
            return Outcome(Decision.DENY, code, (why,), evaluation_id, agent=agent)
        action = request.action.name if target.action is None else target.action
        return _Asked(request.subject.id or "", target, action, interface, evaluation_id, agent)

    def _outcome(self, asked: _Asked, answer: decisions.Answer) -> Outcome:
        target, evaluation_id, agent = asked.target, asked.evaluation_id, asked.agent
        code = reason_code(answer)
        if target.action is None:  # a method on the server as a whole
            if answer.decision is not Decision.DENY or code in _ACTION_DENIALS:
                return Outcome(
                    Decision.ALLOW,
                    "allow",
                    (f"may use connector {target.connector}",),
                    evaluation_id,
                    connector=target.connector,
                    agent=agent,
                )
            return Outcome(
                Decision.DENY, code, answer.reasons, evaluation_id, target.connector, agent=agent
            )
        return Outcome(
            answer.decision,
            code,
            answer.reasons,
            evaluation_id,
            target.connector,
            target.action,
            answer.grant_id,
            answer.last_used_at,
            agent,
            requires_approver=answer.requires_approver,
        )

    def ask_many(self, asked: Sequence[_Asked]) -> list[decisions.Answer]:
        """The engine's answers, set-wise, for the people the questions name. The engine
        knows people by id and userName; only the names it knows nobody by are read as Okta
        ids or emails, and those questions asked again (a few statements more, for all)."""

        def question(item: _Asked, user: str) -> decisions.Question:
            assert item.target.connector is not None
            return decisions.Question(user, item.target.connector, item.action, item.interface)

        answers = decisions.decide_many(
            self.connection,
            [question(item, self._people.get(item.ident) or item.ident) for item in asked],
        )
        again = [
            i
            for i, (item, answer) in enumerate(zip(asked, answers, strict=True))
            if item.ident not in self._people
            and answer.decision is Decision.DENY
            and reason_code(answer) == "unknown_subject"
        ]
        if again:
            self.people(asked[i].ident for i in again)
            again = [i for i in again if self._people[asked[i].ident] is not None]
            retried = decisions.decide_many(
                self.connection,
                [question(asked[i], self._people[asked[i].ident] or "") for i in again],
            )
            for i, answer in zip(again, retried, strict=True):
                answers[i] = answer
        return answers

    def run(self, items: list[Request | Invalid], semantic: str) -> list[Outcome]:
        """Evaluate in order under ``semantic``: every one, or up to and including the first
        deny (``deny_on_first_deny``) or permit (``permit_on_first_permit``). All are
        decided at once (reads only): the answer is cut after the first that ends it."""
        answered = []
        for outcome in self.outcomes(items):
            answered.append(outcome)
            if semantic == "deny_on_first_deny" and not outcome.allowed:
                break
            if semantic == "permit_on_first_permit" and outcome.allowed:
                break
        return answered


# -- searches ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Search:
    """A search request: the entities, the searched-for one without its id, and paging."""

    kind: str  # "subject", "resource" or "action"
    subject: Entity
    action: Act | None
    resource: Entity
    context: dict[str, Any]
    limit: int | None  # None: not given (the default, or the limit the token carries)
    token: str | None

    def fingerprint(self) -> str:
        """What must stay the same from page to page (all but the token and the limit,
        which the token carries)."""
        shape = [
            self.kind,
            [self.subject.type, self.subject.id if self.kind != "subject" else None],
            self.subject.properties,
            None if self.action is None else [self.action.name, self.action.properties],
            [self.resource.type, self.resource.id if self.kind != "resource" else None],
            self.resource.properties,
            self.context,
        ]
        text = json.dumps(shape, sort_keys=True, default=str, ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def search(kind: str, document: Any) -> Search:
    """A Subject, Resource or Action Search request; :class:`Invalid` if it is not one."""
    if not isinstance(document, dict):
        raise Invalid("the request body must be a JSON object")
    subject = entity(_required(document, "subject"), "subject", with_id=kind != "subject")
    action = None if kind == "action" else act(_required(document, "action"))
    resource = entity(_required(document, "resource"), "resource", with_id=kind != "resource")
    page = _object(document.get("page"), "page")
    limit = page.get("limit")
    if limit is not None and (type(limit) is not int or not 1 <= limit <= MAX_PAGE):
        raise Invalid(f"page.limit must be an integer from 1 to {MAX_PAGE}")
    token = page.get("token")
    if token is not None and not isinstance(token, str):
        raise Invalid("page.token must be a string")
    context = _object(document.get("context"), "context")
    return Search(kind, subject, action, resource, context, limit, token or None)


@dataclass(frozen=True)
class Found:
    results: list[dict[str, Any]]
    next_token: str
    paged: bool  # whether the request asked for paging or the answer has more


def _encode(key: list[Any], fingerprint: str, limit: int) -> str:
    token = {"after": key, "of": fingerprint, "limit": limit}
    raw = json.dumps(token, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str, fingerprint: str, size: int) -> tuple[list[str], int]:
    """The key a page token holds and the page's limit; :class:`Invalid` for a token this
    PDP did not give out or gave out for another search."""
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        value = None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("after"), list)
        or len(value["after"]) != size
        or not all(isinstance(v, str) and "\x00" not in v for v in value["after"])
        or type(value.get("limit")) is not int
        or not 1 <= value["limit"] <= MAX_PAGE
    ):
        raise Invalid("page.token is not one this PDP gave out")
    if value.get("of") != fingerprint:
        raise Invalid("page.token belongs to another search: send the same request with it")
    return value["after"], value["limit"]


class Searcher:
    """Runs searches with a :class:`Decider`: candidates in key order, decided set-wise a
    chunk at a time."""

    def __init__(self, decider: Decider) -> None:
        self.decider = decider
        self.connection = decider.connection

    def run(self, query: Search) -> Found:
        fingerprint = query.fingerprint()
        size = 2 if self._two_part_key(query) else 1
        after, limit = None, query.limit or DEFAULT_PAGE
        if query.token is not None:
            # The limit of the first page holds for every page: a follow-up may repeat it
            # or leave it out (the certification scenario's does), not change it.
            after, limit = _decode(query.token, fingerprint, size)
            if query.limit not in (None, limit):
                raise Invalid(f"page.limit must stay {limit} from page to page")
        candidates = self._candidates(query, after)
        results: list[dict[str, Any]] = []
        last_key: list[str] | None = None
        more = False
        # Candidates are decided set-wise, as many at a time as are read at a time.
        while chunk := list(itertools.islice(candidates, CHUNK)):
            outcomes = self.decider.outcomes([request for _, _, request in chunk])
            for (key, result, _), outcome in zip(chunk, outcomes, strict=True):
                if not outcome.allowed:
                    continue
                if len(results) == limit:
                    more = True
                    break
                results.append(result)
                last_key = key
            if more:
                break
        next_token = _encode(last_key, fingerprint, limit) if more and last_key else ""
        return Found(results, next_token, paged=query.token is not None or more)

    def _two_part_key(self, query: Search) -> bool:
        return query.kind == "resource" and query.resource.type == TOOL

    def _candidates(
        self, query: Search, after: list[str] | None
    ) -> Iterator[tuple[list[str], dict[str, Any], Request]]:
        if query.kind == "subject":
            return self._subjects(query, after)
        if query.kind == "resource":
            return self._resources(query, after)
        return self._actions(query, after)

    def _chunks(self, statement: Any, keys: list[Any], after: list[str] | None) -> Iterator[Any]:
        """Rows of ``statement`` in the order of ``keys``, after ``after``, read in chunks."""
        chunk = CHUNK
        while True:
            query = statement
            if after is not None:
                query = query.where(_after(keys, after))
            rows = self.connection.execute(query.order_by(*keys).limit(chunk)).all()
            yield from rows
            if len(rows) < chunk:
                return
            after = [str(getattr(rows[-1], k.key)) for k in keys]

    def _subjects(self, query: Search, after: list[str] | None) -> Iterator[Any]:
        if query.subject.type not in SUBJECT_TYPES:
            return
        probe = Request(
            Entity(query.subject.type, "-"),
            query.action or Act("-"),
            query.resource,
            query.context,
        )
        try:
            target = self.decider.target(probe)
        except Invalid:
            return
        if target.connector is None:
            return
        statement = (
            select(User.id, User.user_name, User.user_name_key)
            .join(Grant, Grant.user_id == User.id)
            .join(Connector, Connector.id == Grant.connector_id)
            .where(Connector.slug == target.connector, Grant.revoked_at.is_(None))
        )
        for row in self._chunks(statement, [User.user_name_key], after):
            request = Request(
                Entity(query.subject.type, str(row.id), query.subject.properties),
                probe.action,
                query.resource,
                query.context,
            )
            yield [row.user_name_key], {"type": query.subject.type, "id": row.user_name}, request

    def _resources(self, query: Search, after: list[str] | None) -> Iterator[Any]:
        kind = query.resource.type
        if query.subject.type not in SUBJECT_TYPES or not self.decider.known_type(kind):
            return
        person = self.decider.person(query.subject.id or "")
        if person is None:
            return
        held = (
            select(Grant.connector_id)
            .where(Grant.user_id == uuid.UUID(person), Grant.revoked_at.is_(None))
            .scalar_subquery()
        )
        subject = Entity(query.subject.type, person, query.subject.properties)
        assert query.action is not None
        if kind == TOOL:
            statement = (
                select(Connector.slug, Connector.resource_uri, Action.name)
                .join(Action, Action.connector_id == Connector.id)
                .where(Connector.id.in_(held))
            )
            named = self.decider.server(query.resource, query.context)
            if named is False:
                return
            if named is not None:
                statement = statement.where(Connector.slug == named)
            for row in self._chunks(statement, [Connector.slug, Action.name], after):
                resource = Entity(TOOL, row.name, {"connector": row.slug})
                result: dict[str, Any] = {"type": TOOL, "id": row.name}
                result["properties"] = {"connector": row.slug, "mcp_server": row.resource_uri}
                yield (
                    [row.slug, row.name],
                    result,
                    Request(subject, query.action, resource, query.context),
                )
            return
        statement = select(Connector.slug, Connector.resource_uri).where(Connector.id.in_(held))
        if kind == MCP_SERVER:
            statement = statement.where(Connector.resource_uri.is_not(None))
        elif kind != CONNECTOR:
            statement = statement.where(Connector.resource_type == kind)
        for row in self._chunks(statement, [Connector.slug], after):
            ident = row.resource_uri if kind == MCP_SERVER else row.slug
            yield (
                [row.slug],
                {"type": kind, "id": ident},
                Request(subject, query.action, Entity(kind, ident), query.context),
            )

    def _actions(self, query: Search, after: list[str] | None) -> Iterator[Any]:
        kind = query.resource.type
        if query.subject.type not in SUBJECT_TYPES or not self.decider.known_type(kind):
            return
        if kind == TOOL:
            names: Callable[[], list[str]] = lambda: [TOOL_CALL]  # noqa: E731
        elif kind == MCP_SERVER:
            names = lambda: list(SERVER_METHODS)  # noqa: E731
        else:
            probe = Request(query.subject, Act("-"), query.resource, query.context)
            target = self.decider.target(probe)
            if target.connector is None:
                return
            slug = target.connector
            names = lambda: list(  # noqa: E731
                self.connection.scalars(
                    select(Action.name)
                    .join(Connector, Connector.id == Action.connector_id)
                    .where(Connector.slug == slug)
                    .order_by(Action.name)
                )
            )
        for name in sorted(names()):
            if after is not None and name <= after[0]:
                continue
            request = Request(query.subject, Act(name), query.resource, query.context)
            yield [name], {"name": name}, request


def _after(keys: list[Any], values: list[str]) -> Any:
    """Rows after ``values`` in the order of ``keys`` (a keyset condition)."""
    if len(keys) == 1:
        return keys[0] > values[0]
    first, second = keys
    return (first > values[0]) | and_(first == values[0], second > values[1])
