"""A connector's MCP server's tools, listed with the official MCP SDK client over
streamable HTTP, under the egress policy, within a deadline."""

from __future__ import annotations

from typing import Any

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from provisioning.connectors import tools
from provisioning.delivery.egress import Egress, EgressRefused
from provisioning.delivery.transport import async_client

PAGES = 100  # a server that pages forever is cut off here


class Unreachable(ConnectionError):
    """The server could not be listed (refused by egress, down, too slow, not MCP)."""


async def _list(url: str, egress: Egress, timeout: float) -> list[tools.Tool]:
    found: list[tools.Tool] = []
    async with async_client(egress, timeout=timeout) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode="legacy", cache=None) as client:
            cursor: str | None = None
            for _ in range(PAGES):
                page = await client.list_tools(cursor=cursor)
                for t in page.tools:
                    hints: dict[str, Any] = (
                        t.annotations.model_dump(by_alias=True, exclude_none=True)
                        if t.annotations is not None
                        else {}
                    )
                    found.append(tools.tool(t.name, t.description, hints))
                    if len(found) > tools.MAX_TOOLS:
                        return found  # tools.listing refuses it, by its count
                cursor = page.next_cursor
                if not cursor:
                    return found
    raise Unreachable(f"the server at {url} pages beyond {PAGES} pages of tools")


def list_tools(url: str, egress: Egress, *, timeout: float = 10.0) -> list[tools.Tool]:
    """Every tool the MCP server at ``url`` lists.

    :raises Unreachable: refused by the egress policy, not reachable, not an MCP server,
        or no complete answer within ``timeout`` seconds;
    :raises tools.ToolListRefused: a tool the catalogue cannot hold, or too many.
    """

    async def bounded() -> list[tools.Tool]:
        with anyio.fail_after(timeout):
            return await _list(url, egress, timeout)

    try:
        return anyio.run(bounded)
    except tools.ToolListRefused:
        raise
    except TimeoutError:
        raise Unreachable(
            f"the server at {url} gave no complete tool list in {timeout:g} s"
        ) from None
    except BaseException as exc:  # an ExceptionGroup from the SDK's task group, or one error
        refused = _find(exc, EgressRefused)
        if refused is not None:
            raise Unreachable(f"refused by the egress policy: {refused.reason}") from None
        listing = _find(exc, tools.ToolListRefused)
        if listing is not None:
            raise listing from None
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise Unreachable(f"the server at {url} could not be listed: {_say(exc)}") from None


def _find(exc: BaseException, kind: type[BaseException]) -> Any:
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _find(inner, kind)
        if found is not None:
            return found
    cause = exc.__cause__ or exc.__context__
    return _find(cause, kind) if cause is not None and cause is not exc else None


def _say(exc: BaseException) -> str:
    while getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
