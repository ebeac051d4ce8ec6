"""Effective policy: may this user call this action of this connector from this interface?

A pure function of facts (invariant 4). Deny conditions come first: an
ineligible user, a connector that is disabled or fails governance, an
interface the connector is not offered on (a desktop extension never on web
or mobile), or no grant. Then grants add up across the user's sources
(mappings and exceptions): among the sources that cover the action at a high
enough access level, the loosest wins -- but each source's policy is the org
policy tightened by the source's own, so the result is never looser than the
org policy, and ``blocked`` stays blocked.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from provisioning.connectors.governance import DESKTOP_ONLY
from provisioning.connectors.models import (
    AccessLevel,
    ActionKind,
    ConnectorKind,
    Interface,
    Policy,
)
from provisioning.identity.models import UserState as UserState  # stated with the person


class Decision(enum.StrEnum):
    ALLOW = "allow"
    NEEDS_APPROVAL = "needs_approval"
    BLOCKED = "blocked"
    DENY = "deny"


_BY_POLICY = {
    Policy.ALWAYS_ALLOW: Decision.ALLOW,
    Policy.NEEDS_APPROVAL: Decision.NEEDS_APPROVAL,
    Policy.BLOCKED: Decision.BLOCKED,
}


@dataclass(frozen=True)
class ConnectorFacts:
    slug: str
    kind: ConnectorKind
    capability: AccessLevel
    enabled: bool
    interfaces: frozenset[Interface]
    # Governance failures (empty when the connector passes, see connectors.governance).
    governance_problems: tuple[str, ...] = ()
    unknown_action_policy: Policy = Policy.NEEDS_APPROVAL


@dataclass(frozen=True)
class ActionFacts:
    name: str
    kind: ActionKind
    org_policy: Policy
    # A needs_approval call a second person approves (provisioning/entitlements/approvals.py)
    requires_approver: bool = False


@dataclass(frozen=True)
class Entitlement:
    """One source of a user's access to a connector: a mapping or an exception."""

    source: str
    access_level: AccessLevel
    actions: frozenset[str] | None = None
    policies: Mapping[str, Policy] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reasons: tuple[str, ...]


def _deny(*reasons: str) -> Verdict:
    return Verdict(Decision.DENY, reasons)


def effective_policy(
    user: UserState,
    connector: ConnectorFacts,
    action_name: str,
    action: ActionFacts | None,
    interface: Interface,
    entitlements: Sequence[Entitlement],
) -> Verdict:
    """The decision for one call, with the reasons that led to it.

    ``action`` is None when the connector's catalogue does not know the
    action: it is then treated as the most powerful kind the connector offers,
    with the connector's ``unknown_action_policy`` as its org policy, and only
    sources that grant every action (no action subset) cover it.
    """
    if user is not UserState.ACTIVE:
        return _deny(f"user is {user}")
    if not connector.enabled:
        return _deny(f"connector {connector.slug} is disabled")
    if connector.governance_problems:
        return _deny(*connector.governance_problems)
    if connector.kind is ConnectorKind.DESKTOP_EXTENSION and interface not in DESKTOP_ONLY:
        return _deny(f"desktop extensions are never available on {interface}")
    if interface not in connector.interfaces:
        return _deny(f"connector {connector.slug} is not offered on {interface}")
    if not entitlements:
        return _deny(f"no grant of connector {connector.slug}")

    if action is None:
        kind = _KIND_AT[connector.capability]
        org_policy = connector.unknown_action_policy
        reasons = [
            f"action {action_name} is not catalogued: treated as {kind}, org policy {org_policy}"
        ]
    else:
        kind, org_policy = action.kind, action.org_policy
        if not connector.capability.allows(kind):
            return _deny(f"connector {connector.slug} offers no {kind} actions")
        reasons = [f"org policy of {action_name}: {org_policy}"]

    listed = [e for e in entitlements if _lists(e, action_name, catalogued=action is not None)]
    if not listed:
        return _deny(*reasons, f"no grant includes action {action_name}")
    covering = [e for e in listed if e.access_level.allows(kind)]
    if not covering:
        levels = ", ".join(sorted({str(e.access_level) for e in listed}))
        return _deny(*reasons, f"{levels} access does not allow {kind} action {action_name}")

    best: Policy | None = None
    best_source = ""
    covering.sort(key=lambda e: e.source)
    for entitlement in covering:
        mine = org_policy.tighten(entitlement.policies.get(action_name))
        if best is None or mine.strictness < best.strictness:
            best, best_source = mine, entitlement.source
    assert best is not None
    if best is not org_policy:
        reasons.append(f"tightened to {best} by {best_source}")
    reasons.append(f"granted by {', '.join(e.source for e in covering)}")
    return Verdict(_BY_POLICY[best], tuple(reasons))


def _lists(entitlement: Entitlement, action_name: str, *, catalogued: bool) -> bool:
    if entitlement.actions is None:
        return True
    return catalogued and action_name in entitlement.actions


KIND_AT = _KIND_AT = {
    AccessLevel.READ: ActionKind.READ,
    AccessLevel.READ_WRITE: ActionKind.WRITE,
    AccessLevel.INTERACTIVE: ActionKind.INTERACTIVE,
}
"""The kind of action each access level adds."""
