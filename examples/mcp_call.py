"""Call a tool through the gateway with the official MCP SDK, as a person's AI client does:
the person's access token (from the IdP, audience = the connector's resource URI) as the
bearer; a confirmation asked by the gateway is answered at the terminal. Prints the tools
the person may call and the tool's answer; a refusal is printed and exits 1.

    .venv/bin/python examples/mcp_call.py http://127.0.0.1:8090/mcp "$TOKEN" search_code query=vat
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def confirm(context: Any, params: Any) -> mcp_types.ElicitResult:
    answer = input(f"{params.message} [y/N] ").strip().lower() == "y"
    return mcp_types.ElicitResult(
        action="accept" if answer else "decline", content={"confirm": True} if answer else None
    )


async def call(url: str, token: str, tool: str, arguments: dict[str, Any]) -> tuple[list, str]:
    """The names of the tools listed to the token's person, and the tool's answer."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    client = Client(streamable_http_client(url, http_client=http), elicitation_callback=confirm)
    async with client:
        names = [t.name for t in (await client.list_tools()).tools]
        result = await client.call_tool(tool, arguments)
        return names, str(result.content[0].text if result.content else result)


async def main(url: str, token: str, tool: str, *pairs: str) -> None:
    try:
        names, answer = await call(url, token, tool, dict(p.split("=", 1) for p in pairs))
    except* MCPError as refused:  # the SDK's task groups wrap it
        error: BaseException = refused
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        sys.exit(str(error))
    print("tools:", ", ".join(names))
    print(answer)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:])
