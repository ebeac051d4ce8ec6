"""`provisioning gateway` and `provisioning connectors set|sync-tools`, added to the command
by entry point (so that the service's own command never imports the MCP parts)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from provisioning.cli import Context, _fail, domain_errors, pass_context

if TYPE_CHECKING:  # imported when a command runs: `provisioning --help` loads no domain
    from provisioning.connectors.models import Connector
    from provisioning.delivery.egress import Egress

GOVERNANCE = "provisioning.connectors.governance:GovernanceError"


def _connector(session, slug: str) -> Connector:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from provisioning.connectors.models import Connector

    connector = session.scalar(select(Connector).where(Connector.slug == slug))
    if connector is None:
        _fail(f"no connector {slug}")
    return connector


def _egress(ctx: Context) -> Egress:
    from provisioning.delivery.egress import Egress

    return Egress(ctx.settings.delivery_allowed_network_list)


@click.group()
def connectors() -> None:
    """A connector's MCP server: its endpoint, and its tools as the catalogue's actions."""


@connectors.command("set")
@click.argument("slug")
@click.option("--mcp-url", help="Its MCP server's streamable HTTP endpoint.")
@click.option("--resource-uri", help="Its RFC 9728 resource identifier (tokens' audience).")
@pass_context
@domain_errors(GOVERNANCE)
def connectors_set(ctx: Context, slug: str, mcp_url: str | None, resource_uri: str | None) -> None:
    """Record where the connector's MCP server answers, and what it is called."""
    from provisioning.connectors import catalogue
    from provisioning.delivery.egress import EgressRefused

    changes = {k: v for k, v in (("mcp_url", mcp_url), ("resource_uri", resource_uri)) if v}
    if not changes:
        _fail("nothing to set: give --mcp-url or --resource-uri")
    if mcp_url:
        try:
            _egress(ctx).check_url(mcp_url)
        except EgressRefused as exc:
            _fail(f"--mcp-url refused by the egress policy: {exc.reason}")
    with ctx.migrated().transaction() as session:
        catalogue.update_connector(session, ctx.origin(), _connector(session, slug), **changes)
    click.echo(f"connector {slug}: " + ", ".join(f"{k}={v}" for k, v in changes.items()), err=True)


@connectors.command("sync-tools")
@click.argument("slug")
@click.option("--apply", "confirm", is_flag=True, help="Write the diff to the catalogue.")
@click.option("--digest", help="Apply only if the diff is still the one with this digest.")
@click.option("--json", "as_json", is_flag=True, help="The diff as JSON.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the server.")
@pass_context
@domain_errors(GOVERNANCE, "provisioning.connectors.tools:ToolListRefused", ConnectionError)
def sync_tools(
    ctx: Context, slug: str, confirm: bool, digest: str | None, as_json: bool, timeout: float
) -> None:
    """List the MCP server's tools and show the diff with the catalogue (a dry run: only
    the `uncatalogued_tool` findings are written); --apply writes it."""
    from provisioning.connectors import tools
    from provisioning.integrations.mcp_gateway import upstream  # the MCP SDK: when used

    database = ctx.migrated()
    with database.reader() as session:
        url = _connector(session, slug).mcp_url
    if url is None:
        _fail(f"connector {slug} has no MCP endpoint: provisioning connectors set {slug} --mcp-url")
    listed = upstream.list_tools(url, _egress(ctx), timeout=timeout)
    with database.transaction() as session:
        found = tools.sync(
            session, ctx.origin(), _connector(session, slug), listed, confirm=confirm, digest=digest
        )
    if as_json:
        click.echo(json.dumps({**found.as_dict(), "applied": confirm}, indent=2))
        return
    for change in found.changes:
        hints = f" open-world={change.open_world}" if change.open_world is not None else ""
        click.echo(f"{change.change:9} {change.name}: {change.kind}, {change.org_policy}{hints}")
    click.echo(
        f"{len(found.added)} added, {len(found.changed)} changed, {len(found.vanished)} vanished,"
        f" {found.unchanged} unchanged; digest {found.digest}"
        + ("; applied" if confirm else "; nothing written (--apply to write)"),
        err=True,
    )


@click.command()
@click.option("--connector", "slug", required=True, help="The connector whose server to front.")
@click.option("--listen", default="127.0.0.1:8090", show_default=True, help="HOST:PORT")
@click.option(
    "--pdp-url",
    envvar="PROVISIONING_GATEWAY_PDP_URL",
    help="The service's base URL (default: PROVISIONING_PUBLIC_URL).",
)
@click.option(
    "--pdp-token",
    envvar="PROVISIONING_GATEWAY_PDP_TOKEN",
    required=True,
    help="A token with decisions:check (provisioning token create --scope decisions:check).",
)
@click.option(
    "--person-claim",
    envvar="PROVISIONING_GATEWAY_PERSON_CLAIM",
    default="sub",
    show_default=True,
    help="The token claim naming the person (sub, email, or an on-behalf-of claim).",
)
@pass_context
def gateway(
    ctx: Context, slug: str, listen: str, pdp_url: str | None, pdp_token: str, person_claim: str
) -> None:
    """Run the MCP gateway in front of a connector's MCP server (docs/gateway.md)."""
    import uvicorn

    from provisioning.integrations.mcp_gateway import proxy

    settings = ctx.settings
    with ctx.migrated().reader() as session:
        connector = _connector(session, slug)
        url, resource = connector.mcp_url, connector.resource_uri
    host, _, port = listen.rpartition(":")
    problems = [
        what
        for what, missing in (
            (f"connector {slug} has no mcp_url", url is None),
            (f"connector {slug} has no resource_uri", resource is None),
            ("PROVISIONING_JWT_ISSUER is not set", not settings.jwt_issuer),
            ("PROVISIONING_JWKS_URL is not set", not settings.jwks_url),
            ("no --pdp-url and no PROVISIONING_PUBLIC_URL", not (pdp_url or settings.public_url)),
            (f"--listen {listen} is not HOST:PORT", not host or not port.isdigit()),
        )
        if missing
    ]
    if problems:
        _fail("; ".join(problems))
    server, _ = proxy.build(
        proxy.Settings(
            connector=slug,
            upstream_url=url,  # type: ignore[arg-type]
            resource=resource,  # type: ignore[arg-type]
            issuer=settings.jwt_issuer,  # type: ignore[arg-type]
            jwks_url=settings.jwks_url,  # type: ignore[arg-type]
            pdp_url=pdp_url or settings.public_url,  # type: ignore[arg-type]
            pdp_token=pdp_token,
            person_claim=person_claim,
            interface=settings.authzen_interface,
            leeway=settings.jwt_leeway_seconds,
        )
    )
    click.echo(f"gateway for {slug} on http://{listen}/mcp -> {url}", err=True)
    uvicorn.run(server.http_app(path="/mcp"), host=host, port=int(port), log_level="warning")
