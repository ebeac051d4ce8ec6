"""Real servers for the gateway's tests, each on 127.0.0.1 in a thread of its own: an
upstream MCP server written with FastMCP (a read, a destructive write, an unannotated
tool; it records the calls it gets), and a runner for any ASGI app (the gateway)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn
from fastmcp import FastMCP


class Background:
    """An ASGI app served by uvicorn on a free port of 127.0.0.1, until :meth:`close`."""

    def __init__(self, app: Any = None, path: str = "/mcp") -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + path
        if app is not None:
            self.start(app)

    def start(self, app: Any) -> None:
        """Serve ``app`` on the port already bound (its URL may be in the app)."""
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.socket])), daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


class Upstream:
    """The connector's MCP server: its tools, and the calls that reached it."""

    def __init__(self, extra: int = 0) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.mcp = FastMCP("records")
        calls = self.calls

        @self.mcp.tool(annotations={"readOnlyHint": True, "openWorldHint": False})
        def read_record(id: str) -> str:
            """Read a record."""
            calls.append(("read_record", {"id": id}))
            return f"record {id}"

        @self.mcp.tool(annotations={"destructiveHint": True, "readOnlyHint": False})
        def delete_record(id: str) -> str:
            """Delete a record for good."""
            calls.append(("delete_record", {"id": id}))
            return f"deleted {id}"

        @self.mcp.tool
        def update_record(id: str, text: str) -> str:
            """Change a record's text."""
            calls.append(("update_record", {"id": id, "text": text}))
            return f"updated {id}"

        @self.mcp.resource("records://index")
        def index() -> str:
            """Every record's id."""
            return "7, 9"

        for n in range(extra):
            self.add(f"tool_{n:04d}")
        self.background = Background(self.mcp.http_app(path="/mcp"))
        self.url = self.background.url

    def add(self, name: str, **options: Any) -> None:
        calls = self.calls

        def tool(id: str = "") -> str:
            calls.append((name, {"id": id}))
            return name

        self.mcp.tool(tool, name=name, **options)

    def close(self) -> None:
        self.background.close()


def connector(slug: str, *, mcp_url: str, resource_uri: str | None = None) -> dict[str, Any]:
    """The admin API's body for a connector whose MCP server is at ``mcp_url``."""
    body: dict[str, Any] = {
        "slug": slug,
        "name": slug.title(),
        "kind": "remote",
        "capability": "read_write",
        "publisher": "internal",
        "interfaces": ["web", "desktop", "code", "mobile"],
        "security_review": "approved",
        "mcp_url": mcp_url,
        "enabled": True,
    }
    if resource_uri is not None:
        body["resource_uri"] = resource_uri
    return body
