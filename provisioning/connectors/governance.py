"""Governance guards on connectors (invariant 7), stated once for every caller.

- a third-party connector cannot be enabled before its security review is approved;
- a connector holding regulated data cannot be enabled without a recorded
  compliance assessment;
- a desktop extension is never offered on the web or mobile interfaces.
"""

from __future__ import annotations

from collections.abc import Iterable

from provisioning.connectors.models import (
    Connector,
    ConnectorKind,
    DataClassification,
    Interface,
    Publisher,
    ReviewStatus,
)

DESKTOP_ONLY = frozenset({Interface.DESKTOP, Interface.CODE})


class GovernanceError(ValueError):
    """A change would break a governance guard; nothing was changed."""


def enablement_problems(connector: Connector) -> tuple[str, ...]:
    """Why the connector may not be enabled (or granted) now; empty if it may."""
    problems = []
    if connector.publisher == Publisher.THIRD_PARTY and (
        connector.security_review != ReviewStatus.APPROVED
    ):
        problems.append(
            f"third-party connector {connector.slug} needs an approved security review "
            f"(review is {connector.security_review})"
        )
    if connector.data_classification == DataClassification.REGULATED and not (
        connector.compliance_assessment
    ):
        problems.append(
            f"connector {connector.slug} holds regulated data and has no recorded "
            "compliance assessment"
        )
    return tuple(problems)


def check_interfaces(kind: ConnectorKind, interfaces: Iterable[str]) -> list[Interface]:
    """The interfaces, validated: known names, and desktop extensions desktop-only."""
    try:
        chosen = sorted({Interface(i) for i in interfaces})
    except ValueError as exc:
        raise GovernanceError(f"{exc}; interfaces are web, mobile, desktop, code") from None
    if kind == ConnectorKind.DESKTOP_EXTENSION:
        refused = [str(i) for i in chosen if i not in DESKTOP_ONLY]
        if refused:
            raise GovernanceError(
                "a desktop extension runs only in desktop and code, never on " + ", ".join(refused)
            )
    return chosen


def check_enabled(connector: Connector) -> None:
    """Raise :class:`GovernanceError` if the connector is enabled against a guard."""
    if connector.enabled and (problems := enablement_problems(connector)):
        raise GovernanceError("; ".join(problems))
