"""An example MCP server (FastMCP, streamable HTTP on 127.0.0.1:8001/mcp) standing in for
the demo's GitHub connector: the same five tools as its catalogue (`provisioning demo`),
answering with made-up data. For trying the gateway locally; it does nothing real.

    .venv/bin/python examples/github_mcp.py [--port 8001]
"""

from __future__ import annotations

import sys

from fastmcp import FastMCP

server = FastMCP("github (example)")
READ = {"readOnlyHint": True, "openWorldHint": False}
DESTRUCTIVE = {"destructiveHint": True, "readOnlyHint": False}


@server.tool(annotations=READ)
def search_code(query: str) -> str:
    """Search the organisation's code."""
    return f"2 results for {query!r}: billing/invoice.py:12, billing/tax.py:40"


@server.tool(annotations=READ)
def get_pull_request(number: int) -> str:
    """Read a pull request."""
    return f"pull request #{number}: Fix rounding of VAT (open)"


@server.tool
def create_issue(title: str) -> str:
    """Open an issue."""
    return f"issue #101 opened: {title}"


@server.tool(annotations=DESTRUCTIVE)
def merge_pull_request(number: int) -> str:
    """Merge a pull request."""
    return f"pull request #{number} merged"


@server.tool(annotations=DESTRUCTIVE)
def delete_repository(name: str) -> str:
    """Delete a repository for good."""
    return f"repository {name} deleted"


if __name__ == "__main__":
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 8001
    server.run(
        transport="http",
        host="127.0.0.1",
        port=port,
        path="/mcp",
        show_banner=False,
        log_level="warning",
    )
