"""The README's loop ("Try the gateway"), through the same example pieces: `provisioning
demo`, examples/github_mcp.py as the connector's MCP server, examples/dev_issuer.py as the
person's IdP, the gateway, examples/mcp_call.py as the client; a call allowed, an HR
offboarding, the next call refused. All over real HTTP on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import anyio
import httpx2
import pytest
from click.testing import CliRunner

from provisioning.cli import main
from provisioning.integrations.mcp_gateway import proxy
from tests.api.authzen_fixture import serve
from tests.gateway.servers import Background
from tests.gateway.test_gateway import mcp_error

EXAMPLES = Path(__file__).parents[2] / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_loop_demo_call_offboard_refused(database, issuer, tmp_path):
    env = {"DATABASE_URL": database.url, "PROVISIONING_DELIVERY_ALLOWED_NETWORKS": "127.0.0.0/8"}

    def cli(*args: str) -> str:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    github, dev_issuer, mcp_call = (example(n) for n in ("github_mcp", "dev_issuer", "mcp_call"))
    upstream = Background(github.server.http_app(path="/mcp"))
    front = Background()  # the gateway's port: its URL is the connector's resource URI
    key = dev_issuer.load_key(tmp_path / "dev-issuer.jwk")
    keys = dev_issuer.start(key)
    port = keys.server_address[1]
    services = serve(database, issuer)
    live = next(services)
    try:
        cli("demo")
        hr = cli("token", "create", "--name", "hr", "--scope", "offboarding:write").strip()
        pdp = cli("token", "create", "--name", "demo-gateway", "--scope", "decisions:check").strip()
        cli("connectors", "set", "github", "--mcp-url", upstream.url, "--resource-uri", front.url)
        server, decisions = proxy.build(
            proxy.Settings(
                connector="github",
                upstream_url=upstream.url,
                resource=front.url,
                issuer=dev_issuer.issuer_url(port),
                jwks_url=f"{dev_issuer.issuer_url(port)}/keys",
                pdp_url=live.base,
                pdp_token=pdp,
            )
        )
        front.start(server.http_app(path="/mcp"))
        token = dev_issuer.mint(key, "ada.lovelace@example.com", front.url, port=port)

        names, answer = anyio.run(mcp_call.call, front.url, token, "search_code", {"query": "vat"})
        assert "results for 'vat'" in answer
        assert "search_code" in names and "delete_repository" not in names  # blocked: hidden

        offboarded = httpx2.post(
            f"{live.base}/api/v1/offboardings",
            json={"userName": "ada.lovelace@example.com", "reason": "left"},
            headers={"Authorization": f"Bearer {hr}"},
        )
        assert offboarded.status_code in (200, 201, 202), offboarded.text

        with pytest.raises(BaseException) as caught:
            anyio.run(mcp_call.call, front.url, token, "search_code", {"query": "vat"})
        assert "user_inactive" in mcp_error(caught.value).message
        anyio.run(decisions.close)
    finally:
        if hasattr(front, "server"):
            front.close()
        upstream.close()
        keys.shutdown()
        keys.server_close()
        services.close()


def test_the_readme_runs_these_pieces():
    readme = (EXAMPLES.parent / "README.md").read_text()
    block = readme.split("## Try the gateway", 1)[1].split("```")[1]
    for piece in (
        "provisioning demo",
        "examples/github_mcp.py &",
        "examples/dev_issuer.py serve &",
        "provisioning connectors set github --mcp-url",
        "provisioning gateway --connector github &",
        "examples/dev_issuer.py token ada.lovelace@example.com",
        "examples/mcp_call.py http://127.0.0.1:8090/mcp",
        "/api/v1/offboardings",
    ):
        assert piece in block, piece
    for path in re.findall(r"examples/\w+\.py", block):
        assert (EXAMPLES.parent / path).is_file(), path
