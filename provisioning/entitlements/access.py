"""A person's access as a reader sees it: live grants, their sources, each action's policy.

:func:`of_user` answers in three statements whatever the number of
connectors (the live grants with their connectors, those connectors'
actions, and the person's live sources of access to them), then computes
each action's effective policy per interface with the decision path's own
pure :func:`~provisioning.entitlements.policy.effective_policy`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.connectors.models import (
    AccessLevel,
    Action,
    ActionKind,
    Connector,
    Interface,
    Policy,
)
from provisioning.database import utcnow
from provisioning.entitlements import sources as kinds
from provisioning.entitlements.decisions import connector_facts, entitlement
from provisioning.entitlements.models import Grant
from provisioning.entitlements.policy import ActionFacts, Decision, Entitlement, effective_policy
from provisioning.identity.models import User


@dataclass(frozen=True)
class Source:
    """One live source of a grant, as shown: ``mapping:ID`` (its group) or ``exception:ID``."""

    source: str
    group: str | None
    expires_at: dt.datetime | None
    justification: str | None


@dataclass(frozen=True)
class ActionAccess:
    name: str
    kind: ActionKind
    org_policy: Policy
    # The decision per interface the connector is offered on.
    effective: dict[str, Decision]


@dataclass(frozen=True)
class GrantAccess:
    grant_id: int
    connector: str
    access_level: AccessLevel
    granted_at: dt.datetime
    last_used_at: dt.datetime | None
    last_used_agent: str | None
    last_evaluation_id: str | None
    sources: list[Source]
    actions: list[ActionAccess]


def of_user(session: Session, user: User) -> list[GrantAccess]:
    """Every live grant of ``user`` (by connector slug), its live sources, and each of its
    connector's actions with the effective policy on every interface offered."""
    held = select(Grant.connector_id).where(Grant.user_id == user.id, Grant.revoked_at.is_(None))
    grants = session.execute(
        select(Grant, Connector)
        .join(Connector, Connector.id == Grant.connector_id)
        .where(Grant.user_id == user.id, Grant.revoked_at.is_(None))
        .order_by(Connector.slug)
    ).all()
    actions: dict[int, list[Action]] = defaultdict(list)
    for action in session.scalars(
        select(Action).where(Action.connector_id.in_(held)).order_by(Action.name)
    ):
        actions[action.connector_id].append(action)
    entitlements: dict[int, list[tuple[Entitlement, Source]]] = defaultdict(list)
    rows = session.execute(
        kinds.union(
            lambda source: source.select(
                source.connector_id.label("connector_id"),
                source.label,
                source.ref.label("ref"),
                source.access_level.label("access_level"),
                source.actions.label("actions"),
                source.policies.label("policies"),
                source.expires_at.label("expires_at"),
                source.group.label("group_name"),
                source.justification.label("justification"),
                now=utcnow(),
            ).where(source.user_id == user.id, source.connector_id.in_(held))
        )
    )
    for row in rows:
        given = entitlement(row.via, row.ref, row.access_level, row.actions, row.policies)
        shown = Source(given.source, row.group_name, row.expires_at, row.justification)
        entitlements[row.connector_id].append((given, shown))

    state = user.state
    out = []
    for grant, connector in grants:
        sources = sorted(entitlements[connector.id], key=lambda pair: pair[0].source)
        given = [entitlement for entitlement, _ in sources]
        facts = connector_facts(connector)
        interfaces = sorted(Interface(i) for i in connector.interfaces)
        out.append(
            GrantAccess(
                grant_id=grant.id,
                connector=connector.slug,
                access_level=grant.access_level,
                granted_at=grant.granted_at,
                last_used_at=grant.last_used_at,
                last_used_agent=grant.last_used_agent,
                last_evaluation_id=grant.last_evaluation_id,
                sources=[shown for _, shown in sources],
                actions=[
                    ActionAccess(
                        action.name,
                        action.kind,
                        action.org_policy,
                        {
                            str(i): effective_policy(
                                state,
                                facts,
                                action.name,
                                ActionFacts(action.name, action.kind, action.org_policy),
                                i,
                                given,
                            ).decision
                            for i in interfaces
                        },
                    )
                    for action in actions[connector.id]
                ],
            )
        )
    return out
