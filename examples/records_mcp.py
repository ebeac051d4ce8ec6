"""An example MCP server (FastMCP, streamable HTTP on 127.0.0.1:8001/mcp) with the three
kinds of tool the gateway tells apart: a read, a destructive write, an unannotated one.

    .venv/bin/python examples/records_mcp.py
"""

from __future__ import annotations

from fastmcp import FastMCP

server = FastMCP("records")
RECORDS: dict[str, str] = {"1": "first record"}


@server.tool(annotations={"readOnlyHint": True, "openWorldHint": False})
def read_record(id: str) -> str:
    """Read a record."""
    return RECORDS.get(id, "no such record")


@server.tool(annotations={"destructiveHint": True})
def delete_record(id: str) -> str:
    """Delete a record for good."""
    return f"deleted: {RECORDS.pop(id, 'nothing')}"


@server.tool
def update_record(id: str, text: str) -> str:
    """Change a record's text."""
    RECORDS[id] = text
    return f"record {id} updated"


if __name__ == "__main__":
    server.run(transport="http", host="127.0.0.1", port=8001, path="/mcp")
