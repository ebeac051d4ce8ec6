"""/api/v1/connectors: the connector catalogue and each connector's actions."""

from __future__ import annotations

from flask import Response, current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.api import schemas
from provisioning.api.edge import (
    check_if_match,
    database,
    etag_of,
    fail,
    json_response,
    listing,
    not_found,
    origin,
    route,
    unprocessable,
)
from provisioning.connectors import catalogue, tools
from provisioning.connectors.governance import GovernanceError, enablement_problems
from provisioning.connectors.models import Action, Connector
from provisioning.delivery.egress import Egress, EgressRefused
from provisioning.tokens.credentials import Scope

READ, WRITE = Scope.ADMIN_READ.value, Scope.ADMIN_WRITE.value
TAG = "connectors"


def connector_out(connector: Connector) -> schemas.ConnectorOut:
    return schemas.ConnectorOut(
        id=connector.id,
        slug=connector.slug,
        name=connector.name,
        kind=connector.kind,
        capability=connector.capability,
        publisher=connector.publisher,
        interfaces=connector.interfaces,
        security_review=connector.security_review,
        data_classification=connector.data_classification,
        compliance_assessment=connector.compliance_assessment,
        owner=connector.owner,
        reassess_by=connector.reassess_by,
        dormant_after_days=connector.dormant_after_days,
        dormant_grace_days=connector.dormant_grace_days,
        enabled=connector.enabled,
        unknown_action_policy=connector.unknown_action_policy,
        resource_uri=connector.resource_uri,
        resource_type=connector.resource_type,
        mcp_url=connector.mcp_url,
        governance_problems=list(enablement_problems(connector)),
        created_at=connector.created_at,
        updated_at=connector.updated_at,
    )


def action_out(action: Action) -> schemas.ActionOut:
    return schemas.ActionOut(
        name=action.name,
        kind=action.kind,
        org_policy=action.org_policy,
        requires_approver=action.requires_approver,
        description=action.description,
        annotations=action.annotations,
        vanished_at=action.vanished_at,
        created_at=action.created_at,
        updated_at=action.updated_at,
    )


def egress() -> Egress:
    """Where the service may connect: MCP servers are under delivery's egress policy."""
    settings = current_app.extensions["provisioning.settings"]
    return Egress(settings.delivery_allowed_network_list)


def _check_mcp_url(url: str | None) -> None:
    """422 when the MCP endpoint's host is one the egress policy refuses (before any
    transaction: checking it resolves the host)."""
    if url is None:
        return
    try:
        egress().check_url(url)
    except EgressRefused as exc:
        unprocessable(
            f"refused by the egress policy: {exc.reason}"
            " (internal networks are allowed by PROVISIONING_DELIVERY_ALLOWED_NETWORKS)",
            "mcp_url",
        )


def find_connector(session: Session, slug: str, *, lock: bool = False) -> Connector:
    query = select(Connector).where(Connector.slug == slug)
    if lock:
        query = query.with_for_update()
    connector = session.scalar(query)
    if connector is None:
        not_found(f"connector {slug}")
    return connector  # type: ignore[return-value]


def _answer(connector: Connector, status: int = 200) -> Response:
    out = connector_out(connector)
    return json_response(out, status, etag=etag_of(out))


@route("GET", "/connectors", READ, tag=TAG, ok={200: schemas.ConnectorPage})
def list_connectors(query: schemas.ConnectorQuery) -> Response:
    """Connectors sorted by slug, filtered by enabled, kind, publisher."""
    statement = select(Connector)
    if query.enabled is not None:
        statement = statement.where(Connector.enabled.is_(query.enabled))
    if query.kind is not None:
        statement = statement.where(Connector.kind == query.kind)
    if query.publisher is not None:
        statement = statement.where(Connector.publisher == query.publisher)
    with database().reader() as session:
        return listing(
            session, statement, [Connector.slug], query, schemas.ConnectorPage, connector_out
        )


@route("POST", "/connectors", WRITE, tag=TAG, ok={201: schemas.ConnectorOut}, problems=[409])
def create_connector(body: schemas.ConnectorIn) -> Response:
    """Add a connector; enabling it at once is subject to the governance guards."""
    _check_mcp_url(body.mcp_url)
    with database().transaction() as session:
        if session.scalar(select(Connector.id).where(Connector.slug == body.slug)) is not None:
            fail(409, "Conflict", f"a connector with slug {body.slug} exists", "conflict")
        try:
            connector = catalogue.create_connector(session, origin(), **body.model_dump())
        except GovernanceError as exc:
            unprocessable(str(exc))
        response = _answer(connector, 201)
    response.headers["Location"] = f"/api/v1/connectors/{connector.slug}"
    return response


@route("GET", "/connectors/<slug>", READ, tag=TAG, ok={200: schemas.ConnectorOut}, problems=[404])
def get_connector(path: schemas.ConnectorPath) -> Response:
    with database().reader() as session:
        return _answer(find_connector(session, path.slug))


@route(
    "PATCH",
    "/connectors/<slug>",
    WRITE,
    tag=TAG,
    ok={200: schemas.ConnectorOut},
    problems=[404, 412],
)
def update_connector(path: schemas.ConnectorPath, body: schemas.ConnectorPatch) -> Response:
    """Change fields (If-Match guards against lost updates); holders' grants follow."""
    _check_mcp_url(body.mcp_url)
    with database().transaction() as session:
        connector = find_connector(session, path.slug, lock=True)
        check_if_match(etag_of(connector_out(connector)))
        changes = body.model_dump(exclude_unset=True)
        try:
            catalogue.update_connector(session, origin(), connector, **changes)
        except GovernanceError as exc:
            unprocessable(str(exc))
        return _answer(connector)


def _set_enabled(slug: str, enabled: bool) -> Response:
    with database().transaction() as session:
        connector = find_connector(session, slug, lock=True)
        check_if_match(etag_of(connector_out(connector)))
        if connector.enabled != enabled:
            try:
                catalogue.update_connector(session, origin(), connector, enabled=enabled)
            except GovernanceError as exc:
                fail(409, "Conflict", str(exc), "governance")
        return _answer(connector)


@route(
    "POST",
    "/connectors/<slug>/enable",
    WRITE,
    tag=TAG,
    ok={200: schemas.ConnectorOut},
    problems=[404, 409, 412],
)
def enable_connector(path: schemas.ConnectorPath) -> Response:
    """Enable: refused (409) unless the governance guards pass."""
    return _set_enabled(path.slug, True)


@route(
    "POST",
    "/connectors/<slug>/disable",
    WRITE,
    tag=TAG,
    ok={200: schemas.ConnectorOut},
    problems=[404, 412],
)
def disable_connector(path: schemas.ConnectorPath) -> Response:
    """Disable: every grant of the connector is revoked in the same transaction."""
    return _set_enabled(path.slug, False)


@route(
    "DELETE",
    "/connectors/<slug>",
    WRITE,
    tag=TAG,
    ok={204: None},
    problems=[404, 409, 412],
)
def delete_connector(path: schemas.ConnectorPath) -> Response:
    """Remove a connector with no mappings, live grants or live exceptions."""
    with database().transaction() as session:
        connector = find_connector(session, path.slug, lock=True)
        check_if_match(etag_of(connector_out(connector)))
        try:
            catalogue.delete_connector(session, origin(), connector)
        except GovernanceError as exc:
            fail(409, "Conflict", str(exc), "conflict")
    return Response(status=204)


# -- the tool catalogue from the MCP server -------------------------------------------


@route(
    "POST",
    "/connectors/<slug>/tools/sync",
    WRITE,
    tag=TAG,
    ok={200: schemas.ToolSyncOut},
    problems=[404, 409, 502],
)
def sync_tools(path: schemas.ConnectorPath, body: schemas.ToolSyncIn) -> Response:
    """List the connector's MCP server's tools and diff them with its actions (added,
    changed, vanished; proposals from the tools' annotations); ``apply`` writes the diff
    whose ``digest`` was shown (409 if the server changed since). Uncatalogued tools open
    ``uncatalogued_tool`` findings; vanished ones are flagged, not deleted."""
    from provisioning.integrations.mcp_gateway import upstream  # the MCP SDK: when used

    with database().reader() as session:
        url = find_connector(session, path.slug).mcp_url
    if url is None:
        unprocessable(f"connector {path.slug} has no mcp_url", "mcp_url")
    try:
        listed = upstream.list_tools(url, egress())  # outside any transaction: it waits
    except upstream.Unreachable as exc:
        fail(502, "Bad Gateway", str(exc), "mcp-server")
    except tools.ToolListRefused as exc:
        fail(502, "Bad Gateway", f"the MCP server's tool list is refused: {exc}", "mcp-server")
    with database().transaction() as session:
        connector = find_connector(session, path.slug, lock=True)
        try:
            found = tools.sync(
                session, origin(), connector, listed, confirm=body.apply, digest=body.digest
            )
        except tools.Stale as exc:
            fail(409, "Conflict", str(exc), "conflict")
        except GovernanceError as exc:
            unprocessable(str(exc))
        out = schemas.ToolSyncOut(applied=body.apply, **found.as_dict())
    return json_response(out)


# -- actions ------------------------------------------------------------------------


def find_action(session: Session, connector: Connector, name: str) -> Action:
    action = session.scalar(
        select(Action).where(Action.connector_id == connector.id, Action.name == name)
    )
    if action is None:
        not_found(f"action {name} of connector {connector.slug}")
    return action  # type: ignore[return-value]


@route(
    "GET",
    "/connectors/<slug>/actions",
    READ,
    tag=TAG,
    ok={200: schemas.ActionList},
    problems=[404],
)
def list_actions(path: schemas.ConnectorPath) -> Response:
    """A connector's catalogued actions with their org policy, by name."""
    with database().reader() as session:
        connector = find_connector(session, path.slug)
        actions = [action_out(a) for a in connector.actions]
    return json_response(schemas.ActionList(items=actions))


@route(
    "POST",
    "/connectors/<slug>/actions",
    WRITE,
    tag=TAG,
    ok={201: schemas.ActionOut},
    problems=[404, 409],
)
def create_action(path: schemas.ConnectorPath, body: schemas.ActionIn) -> Response:
    """Catalogue an action; its org policy defaults to needs_approval."""
    with database().transaction() as session:
        connector = find_connector(session, path.slug, lock=True)
        exists = select(Action.id).where(
            Action.connector_id == connector.id, Action.name == body.name
        )
        if session.scalar(exists) is not None:
            fail(409, "Conflict", f"connector {connector.slug} has action {body.name}", "conflict")
        try:
            action = catalogue.add_action(session, origin(), connector, **body.model_dump())
        except GovernanceError as exc:
            unprocessable(str(exc), "kind")
        return json_response(action_out(action), 201)


@route(
    "GET",
    "/connectors/<slug>/actions/<name>",
    READ,
    tag=TAG,
    ok={200: schemas.ActionOut},
    problems=[404],
)
def get_action(path: schemas.ActionPath) -> Response:
    with database().reader() as session:
        connector = find_connector(session, path.slug)
        return json_response(action_out(find_action(session, connector, path.name)))


@route(
    "PATCH",
    "/connectors/<slug>/actions/<name>",
    WRITE,
    tag=TAG,
    ok={200: schemas.ActionOut},
    problems=[404],
)
def update_action(path: schemas.ActionPath, body: schemas.ActionPatch) -> Response:
    """Change an action's kind, org policy or description; decisions see it at once."""
    with database().transaction() as session:
        connector = find_connector(session, path.slug, lock=True)
        action = find_action(session, connector, path.name)
        try:
            catalogue.update_action(
                session, origin(), action, **body.model_dump(exclude_unset=True)
            )
        except GovernanceError as exc:
            unprocessable(str(exc), "kind")
        return json_response(action_out(action))


@route(
    "DELETE",
    "/connectors/<slug>/actions/<name>",
    WRITE,
    tag=TAG,
    ok={204: None},
    problems=[404, 409],
)
def delete_action(path: schemas.ActionPath) -> Response:
    """Remove an action; refused while a mapping names it."""
    with database().transaction() as session:
        connector = find_connector(session, path.slug, lock=True)
        action = find_action(session, connector, path.name)
        try:
            catalogue.delete_action(session, origin(), action)
        except GovernanceError as exc:
            fail(409, "Conflict", str(exc), "conflict")
    return Response(status=204)
