"""Mapping groups to connectors, and manual exceptions: validated, audited, then applied."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.connectors.governance import enablement_problems
from provisioning.connectors.models import AccessLevel, Action, Connector, Policy
from provisioning.database import utcnow
from provisioning.entitlements import brake, engine, separation
from provisioning.entitlements.models import ManualException, Mapping
from provisioning.identity.models import Group, Membership, User
from provisioning.settings import DEFAULTS, Settings


class MappingError(ValueError):
    """A mapping or exception that cannot be made; nothing was changed.

    ``field`` names the input at fault, where one is.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def check_grant(
    session: Session,
    connector: Connector,
    level: AccessLevel,
    actions: list[str] | None,
    policies: dict[str, str] | None,
    holders: Iterable[uuid.UUID] | Select = (),
) -> tuple[list[str] | None, dict[str, str] | None]:
    """Refuse a grant a connector cannot take: disabled or failing governance, beyond its
    capability, naming actions it does not have, or with a policy that is not one; or one
    that would give any of ``holders`` (the people it would reach: ids, or a query of
    them) access a separation-of-duties rule forbids with what they hold
    (:class:`SeparationConflict`). Every source of access (mapping, exception, access
    request) is checked here; a mapping passes no ``holders``: what its change does to its
    group's members is weighed by :func:`_guarded`, which may be confirmed."""
    if not connector.enabled:
        raise MappingError(
            f"connector {connector.slug} is disabled: enable it before granting it", "connector"
        )
    if problems := enablement_problems(connector):
        raise MappingError("; ".join(problems), "connector")
    if not connector.capability.allows_level(level):
        raise MappingError(
            f"access_level {level} exceeds connector {connector.slug}'s capability "
            f"{connector.capability}"
        )
    known = set(session.scalars(select(Action.name).where(Action.connector_id == connector.id)))
    named = set(actions or []) | set(policies or {})
    if unknown := sorted(named - known):
        raise MappingError(f"connector {connector.slug} has no action(s) {', '.join(unknown)}")
    checked_policies = None
    if policies:
        try:
            checked_policies = {name: str(Policy(p)) for name, p in sorted(policies.items())}
        except ValueError:
            raise MappingError("policies must be always_allow, needs_approval or blocked") from None
    if (
        conflict := separation.first_conflict(session, connector.id, holders, level, actions)
    ) is not None:
        raise SeparationConflict(conflict)
    return (sorted(set(actions)) if actions is not None else None), checked_policies


class SeparationConflict(MappingError):
    """The grant would break a separation-of-duties rule (named by ``conflict``)."""

    def __init__(self, conflict: separation.Conflict) -> None:
        super().__init__(str(conflict), "connector")
        self.conflict = conflict


class SeparationViolations(SeparationConflict):
    """A mapping change would begin these separation-of-duties ``violations`` and was not
    confirmed with a reason; ``diff`` is what it would have done to grants."""

    def __init__(
        self, violations: list[separation.Violation], connector_id: int, diff: engine.Diff
    ) -> None:
        first = violations[0]
        super().__init__(first.conflict(connector_id))
        self.args = (
            f"separation of duties: the change would have {len(violations)} person(s) break "
            f"a rule, first {first.user_name} rule {first.rule!r} ({first.reason}); confirm "
            "the violations with a reason, or exempt each person",
        )
        self.violations = violations
        self.diff = diff


REASON_MAX = 500


@dataclass(frozen=True)
class Confirmation:
    """An admin's knowing yes to the separation-of-duties violations a mapping change
    begins, with why. It exempts nobody: each violation is audited twice (the engine's
    ``separation.violated``, and ``separation.accepted`` with who confirmed and why) and
    stays an open finding until the violation goes."""

    reason: str

    @classmethod
    def of(cls, reason: str | None) -> Confirmation:
        if reason is None or not reason.strip():
            raise MappingError("confirming violations needs a reason", "reason")
        if len(reason.strip()) > REASON_MAX:
            raise MappingError(f"a reason is at most {REASON_MAX} characters", "reason")
        return cls(reason.strip())


DRY_RUN = Confirmation("dry run")
"""What a dry run goes on with, as if confirmed: to show every violation a change would
begin (and what it would grant); it writes nothing."""


def _guarded(
    session: Session,
    origin: Origin,
    group_id: uuid.UUID,
    mapping: Callable[[], tuple[Mapping, engine.Diff]],
    confirmation: Confirmation | None,
) -> tuple[Mapping, engine.Diff]:
    """Make a mapping change (``mapping``) for the group's members, refusing it
    (:class:`SeparationViolations`, written nothing once the transaction rolls back) if it
    begins separation-of-duties violations unconfirmed; confirmed, each is audited as
    ``separation.accepted`` with the reason. ``diff.violations`` lists them."""
    members = select(Membership.user_id).where(
        Membership.group_id == group_id, Membership.present.is_(True)
    )
    before = separation.holdings(session, members)
    savepoint = session.begin_nested()
    made, diff = mapping()
    diff.violations = separation.begun(session, before)
    if diff.violations and confirmation is None:
        connector_id = made.connector_id
        savepoint.rollback()  # nothing of the change stays, even in this transaction
        raise SeparationViolations(diff.violations, connector_id, diff)
    savepoint.commit()
    if not diff.violations:
        return made, diff
    record(
        session,
        origin,
        [
            Entry(
                "separation.accepted",
                "separation_rule",
                str(v.rule_id),
                user_id=v.user_id,
                reason=confirmation.reason,
                after={
                    "rule": v.rule,
                    "mapping": made.id,
                    "held": list(v.held),
                    "new": list(v.new),
                },
            )
            for v in diff.violations
        ],
    )
    return made, diff


def mapping_state(mapping: Mapping) -> dict[str, Any]:
    return {
        "group_id": mapping.group_id,
        "connector_id": mapping.connector_id,
        "access_level": mapping.access_level,
        "actions": mapping.actions,
        "policies": mapping.policies,
        "expires_at": mapping.expires_at,
    }


def create_mapping(
    session: Session,
    origin: Origin,
    group: Group,
    connector: Connector,
    access_level: AccessLevel,
    *,
    actions: list[str] | None = None,
    policies: dict[str, str] | None = None,
    expires_at: dt.datetime | None = None,
    description: str | None = None,
    confirmation: Confirmation | None = None,
) -> tuple[Mapping, engine.Diff]:
    """Map a group to a connector and grant it to every member, in this transaction; a
    change beginning separation-of-duties violations needs a ``confirmation``
    (:func:`_guarded`)."""
    level = AccessLevel(access_level)
    actions, policies = check_grant(session, connector, level, actions, policies)
    existing = select(Mapping.id).where(
        Mapping.group_id == group.id, Mapping.connector_id == connector.id
    )
    if session.scalar(existing) is not None:
        raise MappingError(f"group {group.display_name} is already mapped to {connector.slug}")
    fields = {"expires_at": expires_at, "description": description}

    def made() -> tuple[Mapping, engine.Diff]:
        return _create(session, origin, group, connector, level, actions, policies, **fields)

    return _guarded(session, origin, group.id, made, confirmation)


def _create(
    session: Session,
    origin: Origin,
    group: Group,
    connector: Connector,
    level: AccessLevel,
    actions: list[str] | None,
    policies: dict[str, str] | None,
    *,
    expires_at: dt.datetime | None,
    description: str | None,
) -> tuple[Mapping, engine.Diff]:
    mapping = Mapping(
        group_id=group.id,
        connector_id=connector.id,
        access_level=level,
        actions=actions,
        policies=policies,
        expires_at=expires_at,
        description=description,
        created_by=origin.actor,
    )
    session.add(mapping)
    session.flush()
    record(
        session,
        origin,
        [Entry("mapping.created", "mapping", str(mapping.id), after=mapping_state(mapping))],
    )
    return mapping, engine.apply(session, engine.Affected.group(group.id), origin)


def delete_mapping(
    session: Session, origin: Origin, mapping: Mapping, *, settings: Settings = DEFAULTS
) -> engine.Diff:
    """Remove a mapping and revoke what only it justified, in this transaction, under the
    brake (``settings``' mass-revocation limits)."""
    group_id = mapping.group_id
    before = mapping_state(mapping)
    session.delete(mapping)
    session.flush()
    record(session, origin, [Entry("mapping.deleted", "mapping", str(mapping.id), before=before)])
    with brake.applied(session, f"mapping {mapping.id} deleted", settings):
        return engine.apply(session, engine.Affected.group(group_id), origin)


def create_exception(
    session: Session,
    origin: Origin,
    user: User,
    connector: Connector,
    access_level: AccessLevel,
    *,
    justification: str,
    expires_at: dt.datetime,
    actions: list[str] | None = None,
) -> tuple[ManualException, engine.Diff]:
    """Grant one person a connector outside any group, with a reason and an expiry."""
    if not justification or not justification.strip():
        raise MappingError("an exception needs a justification")
    if expires_at is None or expires_at <= utcnow():
        raise MappingError("an exception needs an expiry in the future")
    level = AccessLevel(access_level)
    actions, _ = check_grant(session, connector, level, actions, None, [user.id])
    exception = ManualException(
        user_id=user.id,
        connector_id=connector.id,
        access_level=level,
        actions=actions,
        justification=justification.strip(),
        expires_at=expires_at,
        created_by=origin.actor,
    )
    session.add(exception)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "exception.created",
                "exception",
                str(exception.id),
                user_id=user.id,
                reason=exception.justification,
                after={
                    "connector_id": connector.id,
                    "access_level": level,
                    "actions": actions,
                    "expires_at": expires_at,
                },
            )
        ],
    )
    return exception, engine.apply(session, engine.Affected.users(user.id), origin)


_MAPPING_FIELDS = ("access_level", "actions", "policies", "expires_at", "description")


def update_mapping(
    session: Session,
    origin: Origin,
    mapping: Mapping,
    *,
    settings: Settings = DEFAULTS,
    confirmation: Confirmation | None = None,
    **changes: Any,
) -> engine.Diff:
    """Change a mapping's level, actions, policies, expiry or description; re-derive its
    group's grants in this transaction, under the brake (``settings``' limits). A change
    beginning separation-of-duties violations needs a ``confirmation`` (:func:`_guarded`)."""
    unknown = set(changes) - set(_MAPPING_FIELDS)
    if unknown:
        raise MappingError(f"unknown mapping field(s): {', '.join(sorted(unknown))}")
    connector = session.get(Connector, mapping.connector_id)
    assert connector is not None
    level = AccessLevel(changes.get("access_level", mapping.access_level))
    actions, policies = check_grant(
        session,
        connector,
        level,
        changes.get("actions", mapping.actions),
        changes.get("policies", mapping.policies),
    )

    def made() -> tuple[Mapping, engine.Diff]:
        before = mapping_state(mapping)
        mapping.access_level = level
        mapping.actions = actions
        mapping.policies = policies
        if "expires_at" in changes:
            mapping.expires_at = changes["expires_at"]
            mapping.reminded_at = None  # a new expiry earns a new reminder
        if "description" in changes:
            mapping.description = changes["description"]
        after = mapping_state(mapping)
        session.flush()
        if after != before:
            record(
                session,
                origin,
                [Entry("mapping.updated", "mapping", str(mapping.id), before=before, after=after)],
            )
        with brake.applied(session, f"mapping {mapping.id} changed", settings):
            return mapping, engine.apply(session, engine.Affected.group(mapping.group_id), origin)

    return _guarded(session, origin, mapping.group_id, made, confirmation)[1]


def revoke_exception(
    session: Session, origin: Origin, exception: ManualException, *, reason: str | None = None
) -> engine.Diff:
    """End a manual exception now and revoke what only it justified, in this transaction."""
    if exception.revoked_at is not None:
        raise MappingError(f"exception {exception.id} is already revoked")
    exception.revoked_at = utcnow()
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "exception.revoked",
                "exception",
                str(exception.id),
                user_id=exception.user_id,
                reason=reason,
                before={"connector_id": exception.connector_id},
            )
        ],
    )
    return engine.apply(session, engine.Affected.users(exception.user_id), origin)
