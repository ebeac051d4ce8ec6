"""Governance guards on connectors (invariant 7), stated once for every caller.

- a third-party connector cannot be enabled before its security review is approved;
- a connector holding regulated data cannot be enabled without a recorded
  compliance assessment;
- a desktop extension is never offered on the web or mobile interfaces.

Each guard's condition is written once, over a connector's attributes, with
operators that read the same on a :class:`Connector` (Python booleans) and on
the class (SQL): :func:`enablement_problems` (why a connector may not be
enabled or granted, for the catalogue, decisions and the scan) and
:func:`grantable` (the SQL predicate of the engine and the scan) both come
from :data:`GUARDS`, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_

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


@dataclass(frozen=True)
class Guard:
    """One guard: ``holds(c)`` on a connector or on the class, and what to say when it fails.

    ``name`` is the finding kind the stale-access scan raises for an enabled
    connector that breaks it (possible only by editing the database directly).
    """

    name: str
    holds: Callable[[Any], Any]
    problem: Callable[[Connector], str]
    evidence: Callable[[Connector], dict[str, Any]]


def _assessed(c: Any) -> Any:
    # ``!= None`` rather than ``is not None``: it is IS NOT NULL on the class.
    return (c.compliance_assessment != None) & (c.compliance_assessment != "")  # noqa: E711


GUARDS = (
    Guard(
        "unreviewed_third_party",
        lambda c: (
            (c.publisher != Publisher.THIRD_PARTY) | (c.security_review == ReviewStatus.APPROVED)
        ),
        lambda c: (
            f"third-party connector {c.slug} needs an approved security review "
            f"(review is {c.security_review})"
        ),
        lambda c: {"security_review": str(c.security_review)},
    ),
    Guard(
        "unassessed_regulated",
        lambda c: (c.data_classification != DataClassification.REGULATED) | _assessed(c),
        lambda c: (
            f"connector {c.slug} holds regulated data and has no recorded compliance assessment"
        ),
        lambda c: {"data_classification": "regulated"},
    ),
)


def broken(connector: Connector) -> tuple[Guard, ...]:
    """The guards the connector breaks now."""
    return tuple(guard for guard in GUARDS if not guard.holds(connector))


def enablement_problems(connector: Connector) -> tuple[str, ...]:
    """Why the connector may not be enabled (or granted) now; empty if it may."""
    return tuple(guard.problem(connector) for guard in broken(connector))


def grantable() -> ColumnElement[bool]:
    """SQL condition: the connector may be granted (enabled, every guard holding)."""
    return and_(Connector.enabled.is_(True), *(guard.holds(Connector) for guard in GUARDS))


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
