"""Enforcement at the MCP boundary: the tool catalogue read from a connector's MCP server
(:mod:`.upstream`), and the gateway in front of it that obeys our AuthZEN decisions
(:mod:`.proxy`), with the person's bearer token checked (:mod:`.auth`) and each decision
asked over HTTP (:mod:`.pdp`). Built on the official ``mcp`` SDK and FastMCP; the domain
never imports it."""
