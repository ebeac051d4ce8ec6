"""A connector's tool catalogue against what its MCP server lists: proposals, diff, apply.

The server's tools arrive as :class:`Tool` values (read by an edge with the MCP SDK; no
MCP import here). Their annotations are hints the MCP specification calls untrusted, so
they only *propose* an action: ``readOnlyHint`` → a read action, always allowed;
``destructiveHint`` → a write action that needs approval; anything else → a write action,
always allowed. An admin sees the proposals as a dry-run diff (added, changed, vanished)
and confirms it (:func:`apply`, which checks the diff's digest against what was shown).
A vanished tool is flagged (``vanished_at``), never deleted. Until a tool is catalogued
the connector's ``unknown_action_policy`` answers for it, and an ``uncatalogued_tool``
finding stays open for it (:func:`observe`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.audit.log import Origin
from provisioning.connectors import catalogue
from provisioning.connectors.governance import GovernanceError
from provisioning.connectors.models import Action, ActionKind, Connector, Policy
from provisioning.database import utcnow
from provisioning.oversight import findings
from provisioning.oversight.models import Finding, FindingKind, FindingState, Severity

MAX_TOOLS = 1000
"""The most tools a listing may hold: one AuthZEN batch (1,000 evaluations) filters them."""
DESCRIPTION_LENGTH = 2000
HINTS = ("title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
# An action's name as the admin API takes it (and MCP's own tool-name rule is narrower).
_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,200}$")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
SUBJECT_TYPE = "tool"


class ToolListRefused(ValueError):
    """A listing the catalogue will not take (too many tools, a name it cannot hold)."""


@dataclass(frozen=True)
class Tool:
    """One tool as the server lists it: its name, description and annotation hints."""

    name: str
    description: str | None = None
    annotations: dict[str, Any] = field(default_factory=dict)


def _clean(text: Any, limit: int) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    cleaned = _CONTROL.sub("", text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def tool(name: Any, description: Any = None, annotations: Any = None) -> Tool:
    """A :class:`Tool` from a server's untrusted answer: control characters dropped, the
    description cut to what an action holds, only the known hints of the right types kept.

    :raises ToolListRefused: a name the catalogue cannot hold."""
    if not isinstance(name, str) or not _NAME.match(name):
        shown = repr(name)[:80]
        raise ToolListRefused(f"tool name {shown} is not a name the catalogue can hold")
    hints: dict[str, Any] = {}
    for hint in HINTS:
        value = (annotations or {}).get(hint) if isinstance(annotations, dict) else None
        if hint == "title" and isinstance(value, str):
            hints[hint] = _clean(value, 200)
        elif hint != "title" and isinstance(value, bool):
            hints[hint] = value
    return Tool(name, _clean(description, DESCRIPTION_LENGTH), hints)


def listing(tools: list[Tool]) -> list[Tool]:
    """The server's tools by name; :class:`ToolListRefused` if too many or named twice."""
    if len(tools) > MAX_TOOLS:
        raise ToolListRefused(f"the server lists {len(tools)} tools; at most {MAX_TOOLS} taken")
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})[:5]
        raise ToolListRefused(f"the server lists tool(s) twice: {', '.join(twice)}")
    return sorted(tools, key=lambda t: t.name)


def proposed(tool: Tool) -> tuple[ActionKind, Policy]:
    """The action kind and org policy a tool's annotations suggest."""
    if tool.annotations.get("readOnlyHint") is True:
        return ActionKind.READ, Policy.ALWAYS_ALLOW
    if tool.annotations.get("destructiveHint") is True:
        return ActionKind.WRITE, Policy.NEEDS_APPROVAL
    return ActionKind.WRITE, Policy.ALWAYS_ALLOW


@dataclass(frozen=True)
class Change:
    """One line of the diff: a tool added, changed (description, hints, back after
    vanishing) or vanished."""

    change: str  # "added", "changed", "vanished"
    name: str
    kind: str  # proposed (added) or catalogued (changed, vanished)
    org_policy: str
    description: str | None
    annotations: dict[str, Any] | None
    open_world: bool | None
    before: dict[str, Any] | None = None


@dataclass(frozen=True)
class Diff:
    connector: str
    added: list[Change]
    changed: list[Change]
    vanished: list[Change]
    unchanged: int

    @property
    def changes(self) -> list[Change]:
        return [*self.added, *self.changed, *self.vanished]

    @property
    def digest(self) -> str:
        """What an admin confirms: the diff's content, hashed."""
        body = json.dumps([asdict(c) for c in self.changes], sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "added": [asdict(c) for c in self.added],
            "changed": [asdict(c) for c in self.changed],
            "vanished": [asdict(c) for c in self.vanished],
            "unchanged": self.unchanged,
            "digest": self.digest,
        }


def _state(action: Action) -> dict[str, Any]:
    return {
        "description": action.description,
        "annotations": action.annotations,
        "vanished": action.vanished_at is not None,
    }


def diff(connector: Connector, tools: list[Tool]) -> Diff:
    """The catalogue of ``connector`` against the server's ``tools`` (writes nothing)."""
    tools = listing(tools)
    catalogued = {a.name: a for a in connector.actions}
    offered = {t.name for t in tools}
    added, changed, unchanged = [], [], 0
    for t in tools:
        action = catalogued.get(t.name)
        if action is None:
            kind, policy = proposed(t)
            added.append(
                Change(
                    "added",
                    t.name,
                    str(kind),
                    str(policy),
                    t.description,
                    t.annotations,
                    t.annotations.get("openWorldHint"),
                )
            )
            continue
        after = {"description": t.description, "annotations": t.annotations, "vanished": False}
        if _state(action) == after:
            unchanged += 1
            continue
        changed.append(
            Change(
                "changed",
                t.name,
                str(action.kind),
                str(action.org_policy),
                t.description,
                t.annotations,
                t.annotations.get("openWorldHint"),
                before=_state(action),
            )
        )
    vanished = [
        Change(
            "vanished",
            a.name,
            str(a.kind),
            str(a.org_policy),
            a.description,
            a.annotations,
            (a.annotations or {}).get("openWorldHint"),
        )
        for name, a in sorted(catalogued.items())
        if name not in offered and a.vanished_at is None
    ]
    return Diff(connector.slug, added, changed, vanished, unchanged)


class Stale(GovernanceError):
    """The diff to apply is not the one the admin confirmed (the server changed since)."""


def apply(
    session: Session, origin: Origin, connector: Connector, found: Diff, confirmed: str | None
) -> None:
    """Write the diff to the catalogue, audited: added tools catalogued as proposed,
    changed ones take the server's description and hints, vanished ones are flagged.
    ``confirmed`` is the digest the admin saw (None: what is applied was shown just now).

    :raises Stale: the digest differs; :raises GovernanceError: a proposal the connector
    cannot take (a write tool on a read-only connector); nothing is written then.
    """
    if confirmed is not None and confirmed != found.digest:
        raise Stale("the server's tools changed since the diff was shown: sync again")
    actions = {a.name: a for a in connector.actions}
    for change in found.added:
        catalogue.add_action(
            session,
            origin,
            connector,
            name=change.name,
            kind=ActionKind(change.kind),
            org_policy=Policy(change.org_policy),
            description=change.description,
            annotations=change.annotations,
        )
    for change in found.changed:
        catalogue.update_action(
            session,
            origin,
            actions[change.name],
            description=change.description,
            annotations=change.annotations,
            vanished_at=None,
        )
    now = utcnow()
    for change in found.vanished:
        catalogue.update_action(session, origin, actions[change.name], vanished_at=now)
    observe(session, connector, [])


def observe(session: Session, connector: Connector, uncatalogued: list[Change]) -> None:
    """Make the open ``uncatalogued_tool`` findings of ``connector`` exactly ``uncatalogued``
    (those of other connectors are kept as they are)."""
    prefix = f"{connector.slug}/"
    others = session.execute(
        select(Finding.subject_id, Finding.evidence).where(
            Finding.kind == FindingKind.UNCATALOGUED_TOOL,
            Finding.subject_type == SUBJECT_TYPE,
            Finding.state != FindingState.RESOLVED,
        )
    ).all()
    subjects = [(s, e or {}) for s, e in others if not s.startswith(prefix)]
    subjects += [
        (
            f"{prefix}{c.name}",
            {
                "connector": connector.slug,
                "tool": c.name,
                "answered_by": f"unknown_action_policy: {connector.unknown_action_policy}",
                "proposed": {"kind": c.kind, "org_policy": c.org_policy},
            },
        )
        for c in uncatalogued
    ]
    findings.observe(
        session, FindingKind.UNCATALOGUED_TOOL, Severity.MEDIUM, SUBJECT_TYPE, subjects
    )


def sync(
    session: Session,
    origin: Origin,
    connector: Connector,
    tools: list[Tool],
    *,
    confirm: bool = False,
    digest: str | None = None,
) -> Diff:
    """The diff of ``connector``'s catalogue against ``tools``; uncatalogued tools open
    findings; with ``confirm``, the diff is applied (and their findings resolve)."""
    found = diff(connector, tools)
    if confirm:
        apply(session, origin, connector, found, digest)
    else:
        observe(session, connector, found.added)
    return found
