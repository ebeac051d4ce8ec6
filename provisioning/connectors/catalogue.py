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
)


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
) -> Connector:
    """Add a connector; raise :class:`GovernanceError` if it breaks a guard."""
    if session.scalar(select(Connector.id).where(Connector.slug == slug)) is not None:
        raise GovernanceError(f"a connector with slug {slug!r} already exists")
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
