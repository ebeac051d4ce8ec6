"""The gateway: a FastMCP proxy in front of one connector's MCP server whose middleware
obeys our decisions.

- ``tools/list``: the upstream's tools, less those the person may not call, decided by
  one AuthZEN batch (a tool that needs approval stays listed: calling it asks).
- resources and prompts (listing, reading, getting): allowed while the person may use
  the connector's server (COAZ-MCP's ``mcp_server`` resource), refused otherwise.
- ``tools/call``: one AuthZEN evaluation. ``allow`` → forwarded. ``needs_approval`` → the
  person is asked to confirm through MCP elicitation (a ``2026-07-28`` connection gets an
  ``InputRequiredResult`` and its client retries with the answer; an older one gets
  ``elicitation/create``), forwarded only on accept; a client that cannot ask is refused.
  ``approval_required`` (an approver, not the person, approves this call: call-level
  approval) → the gateway opens the approval task and refuses with ``-32001`` saying it
  is pending; the same call (same person, tool and arguments) made again is forwarded
  once the task is approved, re-evaluated with its approval.
  Otherwise refused with JSON-RPC error ``-32001`` naming the reason code, and nothing
  goes upstream. No decision (the service down, slow, wrong) → refused, ``-32603``.

No decision is cached: every call is decided on the service's committed state, so a
revocation is enforced from the first call after it commits (docs/gateway.md measures
it); only the handles of approval tasks opened are kept, in memory, to present their
approval when the call is made again. Each decision is logged with its
``evaluation_id`` (and the confirmation, if any).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mcp_types
from fastmcp.server import create_proxy
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import InputRequiredToolResult, Tool, ToolResult
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from provisioning.integrations.mcp_gateway.auth import ConnectorResource, PersonTokens
from provisioning.integrations.mcp_gateway.pdp import Decision, Pdp, Unavailable

log = logging.getLogger("provisioning.gateway")
REFUSED = -32001  # COAZ-MCP: a decision that is not a permit
NO_DECISION = -32603  # COAZ-MCP: no decision, so no permit
CONFIRM = "confirm"  # the key of our one input request
CONFIRM_SCHEMA = {
    "type": "object",
    "properties": {"confirm": {"type": "boolean", "title": "Run it"}},
    "required": ["confirm"],
}


@dataclass(frozen=True)
class Settings:
    """What one gateway needs: its connector, the upstream, the issuer, the service."""

    connector: str
    upstream_url: str
    resource: str  # the connector's resource identifier: tokens' audience, RFC 9728
    issuer: str
    jwks_url: str
    pdp_url: str
    pdp_token: str
    person_claim: str = "sub"
    interface: str | None = None
    leeway: int = 30
    timeout: float = 2.0


class Enforcement(Middleware):
    """Ask the service before anything reaches the upstream; see the module's text."""

    def __init__(self, pdp: Pdp, person_claim: str) -> None:
        self.pdp = pdp
        self.person_claim = person_claim
        # Approval tasks opened, by (person, tool, the call's arguments as canonical JSON).
        self.tasks: dict[tuple[str, str, str], str] = {}

    def _who(self) -> tuple[str, str | None]:
        token = get_access_token()
        if token is None:
            raise MCPError(REFUSED, "refused: no authenticated person")
        return str(token.claims[self.person_claim]), token.client_id or None

    async def on_list_tools(
        self,
        context: MiddlewareContext[mcp_types.ListToolsRequest],
        call_next: CallNext[mcp_types.ListToolsRequest, Sequence[Tool]],
    ) -> Sequence[Tool]:
        person, agent = self._who()
        listed = list(await call_next(context))
        try:
            decisions = await self.pdp.decide_all(person, agent, [t.name for t in listed])
        except Unavailable as exc:
            raise MCPError(NO_DECISION, f"refused: {exc}") from None
        return [
            t
            for t, d in zip(listed, decisions, strict=True)
            if d.allowed or d.needs_approval or d.requestable
        ]

    async def _server_use(self, method: str) -> None:
        """Refuse unless the person may use the connector's server (resources, prompts)."""
        person, agent = self._who()
        try:
            decision = await self.pdp.may_use(person, agent, method)
        except Unavailable as exc:
            raise MCPError(NO_DECISION, f"refused: {exc}") from None
        if not decision.allowed:
            self._record(decision, person, agent, method, "refused")
            raise MCPError(
                REFUSED,
                f"refused: {decision.reason}: {decision.message}",
                {"reason": decision.reason, "evaluation_id": decision.evaluation_id},
            )

    async def on_list_resources(self, context: Any, call_next: Any) -> Any:
        await self._server_use("resources/list")
        return await call_next(context)

    async def on_list_resource_templates(self, context: Any, call_next: Any) -> Any:
        await self._server_use("resources/list")
        return await call_next(context)

    async def on_read_resource(self, context: Any, call_next: Any) -> Any:
        await self._server_use("resources/list")
        return await call_next(context)

    async def on_list_prompts(self, context: Any, call_next: Any) -> Any:
        await self._server_use("prompts/list")
        return await call_next(context)

    async def on_get_prompt(self, context: Any, call_next: Any) -> Any:
        await self._server_use("prompts/list")
        return await call_next(context)

    async def on_call_tool(
        self,
        context: MiddlewareContext[mcp_types.CallToolRequestParams],
        call_next: CallNext[mcp_types.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        person, agent = self._who()
        tool = context.message.name
        arguments = dict(context.message.arguments or {})
        try:
            decision = await self.pdp.decide(person, agent, tool, arguments)
            if decision.requestable:
                decision = await self._approved(person, agent, tool, arguments, decision)
        except Unavailable as exc:
            log.warning("gateway: %s for %s on %s: refused, no decision", exc, person, tool)
            raise MCPError(NO_DECISION, f"refused: {exc}") from None
        confirmed = None
        if decision.needs_approval:
            asked = await self._confirm(context, decision, tool)
            if isinstance(asked, ToolResult):
                return asked  # the question itself (2026-07-28): the client asks and retries
            confirmed = asked
            if not confirmed:
                self._record(decision, person, agent, tool, "declined")
                raise MCPError(REFUSED, f"refused: {tool} needs your confirmation, not given")
        elif not decision.allowed:
            self._record(decision, person, agent, tool, "refused")
            raise MCPError(
                REFUSED,
                f"refused: {decision.reason}: {decision.message}",
                {"reason": decision.reason, "evaluation_id": decision.evaluation_id},
            )
        self._record(decision, person, agent, tool, "confirmed" if confirmed else "forwarded")
        return await call_next(context)

    async def _approved(
        self, person: str, agent: str | None, tool: str, arguments: Any, denial: Decision
    ) -> Decision:
        """The decision on a call an approver approves: re-evaluated with the approval of
        the task opened for this very call once approved; otherwise that task (or a new
        one) is pending, and the call is refused saying so."""
        key = (person, tool, json.dumps(arguments, sort_keys=True, separators=(",", ":")))
        endpoint = self.tasks.get(key)
        if endpoint is not None:
            answer = await self.pdp.task(endpoint)
            status = answer["task"].get("status")
            approval = (answer.get("result") or {}).get("approval")
            if status == "approved" and isinstance(approval, dict):
                decision = await self.pdp.decide(person, agent, tool, arguments, approval)
                if decision.allowed:
                    return decision
                self.tasks.pop(key, None)  # spent or out of scope: ask again
            elif status == "pending":
                return self._pending(denial, answer["task"], person, agent, tool)
            else:
                self.tasks.pop(key, None)  # denied, expired, cancelled: ask again
        task = await self.pdp.request_approval(person, agent, tool, arguments, denial)
        self.tasks[key] = task["status_endpoint"]
        return self._pending(denial, task, person, agent, tool)

    def _pending(
        self, denial: Decision, task: dict[str, Any], person: str, agent: str | None, tool: str
    ) -> Decision:
        self._record(denial, person, agent, tool, "approval pending")
        raise MCPError(
            REFUSED,
            f"refused: {tool} with these arguments needs an approver's yes; approval task "
            f"{task.get('id')} is {task.get('status')}: call again once it is approved",
            {
                "reason": denial.reason,
                "evaluation_id": denial.evaluation_id,
                "task": {k: task.get(k) for k in ("id", "status", "status_endpoint")},
            },
        )

    async def _confirm(
        self, context: MiddlewareContext[Any], decision: Decision, tool: str
    ) -> bool | ToolResult:
        """The person's answer (True: accepted), or on a 2026-07-28 connection without
        one yet, the result that asks it."""
        ctx = context.fastmcp_context
        message = f"Run {tool}? {decision.message}"
        capabilities = ctx.session.client_capabilities if ctx is not None else None
        if ctx is None or capabilities is None or capabilities.elicitation is None:
            raise MCPError(
                REFUSED,
                f"refused: {tool} needs your confirmation, and this client cannot ask "
                "for it (MCP elicitation)",
                {"reason": "needs_approval", "evaluation_id": decision.evaluation_id},
            )
        if ctx.request_context is not None and (
            ctx.request_context.protocol_version in MODERN_PROTOCOL_VERSIONS
        ):
            answer = (ctx.input_responses or {}).get(CONFIRM)
            if answer is None:
                ask = mcp_types.ElicitRequest(
                    params=mcp_types.ElicitRequestFormParams(
                        message=message, requested_schema=CONFIRM_SCHEMA
                    )
                )
                return InputRequiredToolResult(
                    mcp_types.InputRequiredResult(input_requests={CONFIRM: ask})
                )
            return _accepted(answer)
        result = await ctx.session.elicit(
            message=message, requested_schema=CONFIRM_SCHEMA, related_request_id=ctx.request_id
        )
        return _accepted(result)

    @staticmethod
    def _record(decision: Decision, person: str, agent: str | None, tool: str, what: str) -> None:
        log.info(
            "gateway: %s %s for %s via %s: %s (%s, evaluation %s)",
            what,
            tool,
            person,
            agent or "-",
            decision.outcome,
            decision.reason,
            decision.evaluation_id,
        )


def _accepted(answer: Any) -> bool:
    return (
        isinstance(answer, mcp_types.ElicitResult)
        and answer.action == "accept"
        and bool((answer.content or {}).get(CONFIRM))
    )


def build(settings: Settings) -> tuple[Any, Pdp]:
    """The gateway's FastMCP server and its decision client (close it when done)."""
    pdp = Pdp(
        settings.pdp_url,
        settings.pdp_token,
        settings.connector,
        server=settings.resource,
        interface=settings.interface,
        timeout=settings.timeout,
    )
    tokens = PersonTokens(
        issuer=settings.issuer,
        jwks_url=settings.jwks_url,
        resource=settings.resource,
        person_claim=settings.person_claim,
        leeway=settings.leeway,
    )
    server = create_proxy(
        settings.upstream_url,
        name=f"gateway:{settings.connector}",
        auth=ConnectorResource(tokens, resource=settings.resource, issuer=settings.issuer),
    )
    server.add_middleware(Enforcement(pdp, settings.person_claim))
    return server, pdp
