"""Adding and changing connectors and their actions, audited and followed by the engine."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.connectors.governance import (
    GovernanceError,
    check_enabled,
    check_interfaces,
)
from provisioning.connectors.models import (
    AccessLevel,
    Action,
    ActionKind,
    Connector,
    ConnectorKind,
    DataClassification,
    Policy,
    Publisher,
    ReviewStatus,
)
from provisioning.entitlements import engine
from provisioning.entitlements.models import Grant, ManualException, Mapping

_STATE_FIELDS = (
    "slug",
    "name",
    "kind",
    "capability",
    "publisher",
    "security_review",
    "data_classification",
    "compliance_assessment",
    "interfaces",
    "owner",
    "reassess_by",
    "enabled",
    "unknown_action_policy",
    "dormant_after_days",
    "dormant_grace_days",
    "resource_uri",
    "resource_type",
    "mcp_url",
)


# Resource types an enforcement point names by themselves (docs/authzen.md): no connector
# may take one as its own.
RESERVED_RESOURCE_TYPES = frozenset({"connector", "tool", "mcp_server"})


def _check_resource(session: Session, slug: str, uri: str | None, kind: str | None) -> None:
    """:class:`GovernanceError` if another connector has the resource URI, or the resource
    type is one the AuthZEN mapping reserves."""
    if kind in RESERVED_RESOURCE_TYPES:
        raise GovernanceError(f"resource type {kind!r} is reserved: choose another")
    if uri is not None:
        other = session.scalar(
            select(Connector.slug).where(Connector.resource_uri == uri, Connector.slug != slug)
        )
        if other is not None:
            raise GovernanceError(f"connector {other} already has resource URI {uri}")


def connector_state(connector: Connector) -> dict[str, Any]:
    return {name: getattr(connector, name) for name in _STATE_FIELDS}


def create_connector(
    session: Session,
    origin: Origin,
    *,
    slug: str,
    name: str,
    kind: ConnectorKind,
    capability: AccessLevel,
    publisher: Publisher,
    interfaces: list[str],
    security_review: ReviewStatus = ReviewStatus.PENDING,
    data_classification: DataClassification = DataClassification.INTERNAL,
    compliance_assessment: str | None = None,
    owner: str | None = None,
    reassess_by: dt.date | None = None,
    enabled: bool = False,
    dormant_after_days: int | None = None,
    dormant_grace_days: int | None = None,
    resource_uri: str | None = None,
    resource_type: str | None = None,
    mcp_url: str | None = None,
) -> Connector:
    """Add a connector; raise :class:`GovernanceError` if it breaks a guard."""
    if session.scalar(select(Connector.id).where(Connector.slug == slug)) is not None:
        raise GovernanceError(f"a connector with slug {slug!r} already exists")
    _check_resource(session, slug, resource_uri, resource_type)
    connector = Connector(
        slug=slug,
        name=name,
        kind=ConnectorKind(kind),
        capability=AccessLevel(capability),
        publisher=Publisher(publisher),
        interfaces=[str(i) for i in check_interfaces(ConnectorKind(kind), interfaces)],
        security_review=ReviewStatus(security_review),
        data_classification=DataClassification(data_classification),
        compliance_assessment=compliance_assessment,
        owner=owner,
        reassess_by=reassess_by,
        enabled=enabled,
        unknown_action_policy=Policy.NEEDS_APPROVAL,
        dormant_after_days=dormant_after_days,
        dormant_grace_days=dormant_grace_days,
        resource_uri=resource_uri,
        resource_type=resource_type,
        mcp_url=mcp_url,
    )
    check_enabled(connector)
    session.add(connector)
    session.flush()
    record(
        session,
        origin,
        [Entry("connector.created", "connector", slug, after=connector_state(connector))],
    )
    return connector


def update_connector(
    session: Session, origin: Origin, connector: Connector, **changes: Any
) -> engine.Diff:
    """Change a connector's fields and re-derive its holders' grants.

    The guards are checked on the changed connector before anything is
    written, so a refused change leaves the connector as it was.
    """
    unknown = set(changes) - set(_STATE_FIELDS)
    if unknown:
        raise GovernanceError(f"unknown connector field(s): {', '.join(sorted(unknown))}")
    before = connector_state(connector)
    candidate = Connector(**{**before, **changes})
    _check_resource(session, connector.slug, candidate.resource_uri, candidate.resource_type)
    candidate.interfaces = [str(i) for i in check_interfaces(candidate.kind, candidate.interfaces)]
    check_enabled(candidate)
    for name in _STATE_FIELDS:
        setattr(connector, name, getattr(candidate, name))
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "connector.updated",
                "connector",
                connector.slug,
                before=before,
                after=connector_state(connector),
            )
        ],
    )
    return engine.apply(session, engine.Affected.connector(connector.id), origin)


def add_action(
    session: Session,
    origin: Origin,
    connector: Connector,
    *,
    name: str,
    kind: ActionKind,
    org_policy: Policy = Policy.NEEDS_APPROVAL,
    description: str | None = None,
    annotations: dict[str, Any] | None = None,
) -> Action:
    """Catalogue an action; a new action needs approval unless told otherwise."""
    kind = ActionKind(kind)
    if not connector.capability.allows(kind):
        raise GovernanceError(
            f"connector {connector.slug} has capability {connector.capability}: "
            f"it cannot offer {kind} actions"
        )
    action = Action(
        connector=connector,
        name=name,
        kind=kind,
        org_policy=Policy(org_policy),
        description=description,
        annotations=annotations,
    )
    session.add(action)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "action.created",
                "action",
                f"{connector.slug}/{name}",
                after={"kind": kind, "org_policy": action.org_policy},
            )
        ],
    )
    return action


_ACTION_FIELDS = (
    "kind",
    "org_policy",
    "requires_approver",
    "description",
    "annotations",
    "vanished_at",
)


def action_state(action: Action) -> dict[str, Any]:
    return {name: getattr(action, name) for name in _ACTION_FIELDS}


def update_action(session: Session, origin: Origin, action: Action, **changes: Any) -> None:
    """Change an action's kind, org policy, description, or what its MCP server says of it
    (grants are per connector: the decision path reads the new policy at once)."""
    unknown = set(changes) - set(_ACTION_FIELDS)
    if unknown:
        raise GovernanceError(f"unknown action field(s): {', '.join(sorted(unknown))}")
    connector = action.connector
    kind = ActionKind(changes.get("kind", action.kind))
    if not connector.capability.allows(kind):
        raise GovernanceError(
            f"connector {connector.slug} has capability {connector.capability}: "
            f"it cannot offer {kind} actions"
        )
    before = action_state(action)
    action.kind = kind
    if "org_policy" in changes:
        action.org_policy = Policy(changes["org_policy"])
    for name in ("requires_approver", "description", "annotations", "vanished_at"):
        if name in changes:
            setattr(action, name, changes[name])
    after = action_state(action)
    if after == before:
        return
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "action.updated",
                "action",
                f"{connector.slug}/{action.name}",
                before=before,
                after=after,
            )
        ],
    )


def _mappings_naming(session: Session, connector: Connector, name: str) -> list[int]:
    rows = session.execute(
        select(Mapping.id, Mapping.actions, Mapping.policies).where(
            Mapping.connector_id == connector.id
        )
    )
    return [id_ for id_, actions, policies in rows if name in {*(actions or []), *(policies or {})}]


def delete_action(session: Session, origin: Origin, action: Action) -> None:
    """Remove an action from the catalogue; refused while a mapping names it."""
    connector = action.connector
    if naming := _mappings_naming(session, connector, action.name):
        raise GovernanceError(
            f"action {action.name} is named by mapping(s) {', '.join(map(str, naming))}: "
            "change them first"
        )
    before = action_state(action)
    session.delete(action)
    session.flush()
    record(
        session,
        origin,
        [Entry("action.deleted", "action", f"{connector.slug}/{action.name}", before=before)],
    )


def delete_connector(session: Session, origin: Origin, connector: Connector) -> None:
    """Remove a connector nobody holds or is mapped to; its audit history stays."""
    in_use = [
        what
        for what, query in (
            ("mappings", select(Mapping.id).where(Mapping.connector_id == connector.id)),
            (
                "live grants",
                select(Grant.id).where(
                    Grant.connector_id == connector.id, Grant.revoked_at.is_(None)
                ),
            ),
            (
                "live exceptions",
                select(ManualException.id).where(
                    ManualException.connector_id == connector.id,
                    ManualException.revoked_at.is_(None),
                ),
            ),
        )
        if session.scalar(query.limit(1)) is not None
    ]
    if in_use:
        raise GovernanceError(
            f"connector {connector.slug} still has {' and '.join(in_use)}: remove them first"
        )
    before = connector_state(connector)
    session.delete(connector)
    session.flush()
    entry = Entry("connector.deleted", "connector", connector.slug, before=before)
    record(session, origin, [entry])
