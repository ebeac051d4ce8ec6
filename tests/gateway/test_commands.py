"""`provisioning connectors set|sync-tools` against a FastMCP server on 127.0.0.1, and
`provisioning gateway` refusing to start without what it needs."""

from __future__ import annotations

import json

from sqlalchemy import select

from provisioning.connectors.models import Action, Connector
from provisioning.oversight.models import Finding, FindingKind
from tests.gateway.servers import Upstream
from tests.org import Org
from tests.test_cli import run

ALLOW = {"PROVISIONING_DELIVERY_ALLOWED_NETWORKS": "127.0.0.0/8"}


def test_set_and_sync_tools_dry_run_then_apply(database, origin):
    with database.transaction() as session:
        Org(session, origin).connector("records")
    server = Upstream()
    try:
        refused = run(database, "connectors", "set", "records", "--mcp-url", server.url)
        assert refused.exit_code == 1 and "egress" in refused.stderr
        done = run(database, "connectors", "set", "records", "--mcp-url", server.url, **ALLOW)
        assert done.exit_code == 0, done.stderr
        dry = run(database, "connectors", "sync-tools", "records", "--json", **ALLOW)
        assert dry.exit_code == 0, dry.stderr
        shown = json.loads(dry.stdout)
        assert len(shown["added"]) == 3 and not shown["applied"]
        with database.reader() as session:
            assert session.scalars(select(Action)).all() == []
            assert (
                len(
                    session.scalars(
                        select(Finding).where(Finding.kind == FindingKind.UNCATALOGUED_TOOL)
                    ).all()
                )
                == 3
            )
        applied = run(
            database,
            "connectors",
            "sync-tools",
            "records",
            "--apply",
            "--digest",
            shown["digest"],
            **ALLOW,
        )
        assert applied.exit_code == 0, applied.stderr
        assert "3 added" in applied.stderr and "applied" in applied.stderr
        with database.reader() as session:
            assert len(session.scalars(select(Action)).all()) == 3
            connector = session.scalar(select(Connector).where(Connector.slug == "records"))
            assert connector.mcp_url == server.url
    finally:
        server.close()


def test_the_gateway_names_what_it_lacks(database, origin):
    with database.transaction() as session:
        Org(session, origin).connector("records")
    result = run(database, "gateway", "--connector", "records", "--pdp-token", "x")
    assert result.exit_code == 1
    for lack in ("no mcp_url", "no resource_uri", "PROVISIONING_JWT_ISSUER", "--pdp-url"):
        assert lack in result.stderr
