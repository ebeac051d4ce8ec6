"""Asking the service's AuthZEN endpoint (docs/authzen.md) over HTTP, as COAZ-MCP maps a
call: the person as subject, the tool of this connector as resource, ``tools/call`` as
action, the agent acting in the context. No answer is no permit (fail closed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2


class Unavailable(Exception):
    """The service gave no decision (down, slow, an error answer): refuse."""


@dataclass(frozen=True)
class Decision:
    """One answer: ``outcome`` is allow, needs_approval, blocked or deny."""

    allowed: bool
    reason: str
    outcome: str
    message: str
    evaluation_id: str | None
    # A call an approver must approve (call-level approval, docs/authzen.md): the denial's
    # ``access_request`` (None: not requestable), and an approval that allowed the call.
    access_request: dict[str, Any] | None = None
    approval: dict[str, Any] | None = None

    @property
    def needs_approval(self) -> bool:
        return self.reason == "needs_approval"

    @property
    def requestable(self) -> bool:
        """False, but an approver's yes to this very call would allow it."""
        return not self.allowed and self.access_request is not None


def _decision(answer: Any) -> Decision:
    if not isinstance(answer, dict) or not isinstance(answer.get("decision"), bool):
        raise Unavailable("the decision service's answer is not a decision")
    context = answer.get("context") if isinstance(answer.get("context"), dict) else {}
    reason = str(context.get("reason") or ("allow" if answer["decision"] else "deny"))
    access = context.get("access_request")
    approval = context.get("approval") if answer["decision"] else None
    return Decision(
        answer["decision"],
        reason,
        str(context.get("outcome") or reason),
        str(context.get("message") or reason),
        context.get("evaluation_id"),
        access if isinstance(access, dict) else None,
        approval if isinstance(approval, dict) else None,
    )


class Pdp:
    """The AuthZEN client of one gateway: one connector, one credential."""

    BATCH = 1000  # the endpoint's most evaluations in one request

    def __init__(
        self,
        base_url: str,
        token: str,
        connector: str,
        *,
        server: str | None = None,
        interface: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.connector = connector
        self.server = server  # the connector's resource URI: its MCP server for AuthZEN
        self.interface = interface
        self.http = httpx2.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    def _question(
        self,
        person: str,
        agent: str | None,
        tool: str,
        method: str = "tools/call",
        arguments: dict[str, Any] | None = None,
        approval: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        context: dict[str, Any] = {}
        if arguments is not None:
            context["arguments"] = arguments
        if approval is not None:
            context["approval"] = approval
        if agent:
            context["agent"] = agent
        if self.interface:
            context["interface"] = self.interface
        resource: dict[str, Any] = {"type": "mcp_server", "id": self.server}
        if method == "tools/call":
            resource = {"type": "tool", "id": tool, "properties": {"connector": self.connector}}
        return {
            "subject": {"type": "identity", "id": person},
            "action": {"name": method},
            "resource": resource,
            "context": context,
        }

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self.http.post(path, json=body)
        except httpx2.HTTPError as exc:
            raise Unavailable(
                f"the decision service cannot be reached ({type(exc).__name__})"
            ) from None
        if response.status_code != 200:
            raise Unavailable(f"the decision service answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise Unavailable("the decision service's answer is not JSON") from None

    async def decide(
        self,
        person: str,
        agent: str | None,
        tool: str,
        arguments: dict[str, Any] | None = None,
        approval: dict[str, Any] | None = None,
    ) -> Decision:
        """The decision on one ``tools/call`` (with its arguments, and an approval of it
        if one was given); :class:`Unavailable` when there is none."""
        question = self._question(person, agent, tool, "tools/call", arguments, approval)
        return _decision(await self._post("/access/v1/evaluation", question))

    async def request_approval(
        self, person: str, agent: str | None, tool: str, arguments: Any, denial: Decision
    ) -> dict[str, Any]:
        """Open the approval task of a requestable denial (its evaluation id the
        Idempotency-Key); the task handle. :class:`Unavailable` when it cannot be opened."""
        assert denial.access_request is not None
        body = self._question(person, agent, tool, "tools/call", arguments)
        body["denial"] = {
            "evaluation_id": denial.evaluation_id,
            "expires_at": denial.access_request.get("expires_at"),
            "binding_token": denial.access_request.get("binding_token"),
        }
        url = str(denial.access_request.get("endpoint") or "/access/v1/requests")
        try:
            response = await self.http.post(
                url, json=body, headers={"Idempotency-Key": str(denial.evaluation_id)}
            )
            task = response.json().get("task") if response.status_code == 201 else None
        except (httpx2.HTTPError, ValueError, AttributeError):
            task = None
        if not isinstance(task, dict) or not isinstance(task.get("status_endpoint"), str):
            raise Unavailable("the approval request could not be opened")
        return task

    async def task(self, status_endpoint: str) -> dict[str, Any]:
        """A task's status answer (``task``, and ``result`` once approved)."""
        try:
            response = await self.http.get(status_endpoint)
            answer = response.json() if response.status_code == 200 else None
        except (httpx2.HTTPError, ValueError):
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("task"), dict):
            raise Unavailable("the approval task's status cannot be read")
        return answer

    async def may_use(self, person: str, agent: str | None, method: str) -> Decision:
        """Whether the person may use the connector's server for ``method`` (COAZ-MCP's
        ``mcp_server`` resource: ``resources/list``, ``prompts/list``, ...)."""
        question = self._question(person, agent, "", method)
        return _decision(await self._post("/access/v1/evaluation", question))

    async def decide_all(self, person: str, agent: str | None, tools: list[str]) -> list[Decision]:
        """Decisions on calling each of ``tools``, in order: one batch request per 1,000."""
        found: list[Decision] = []
        for start in range(0, len(tools), self.BATCH):
            chunk = tools[start : start + self.BATCH]
            body = {"evaluations": [self._question(person, agent, t) for t in chunk]}
            answer = await self._post("/access/v1/evaluations", body)
            items = answer.get("evaluations") if isinstance(answer, dict) else None
            if not isinstance(items, list) or len(items) != len(chunk):
                raise Unavailable("the decision service's batch answer does not match the question")
            found += [_decision(item) for item in items]
        return found

    async def close(self) -> None:
        await self.http.aclose()
