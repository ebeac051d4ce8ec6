"""What a change to a person or a group entails: the fact recorded, then its consequences.

:mod:`provisioning.identity.directory` records facts and says what changed
(:class:`~provisioning.identity.directory.Change`); this module turns each change
into its consequences, in the caller's transaction:

- the engine derives the access of the users it touched (invariant 1), under the
  mass-revocation brake when the change is a group's deletion;
- a change of department or manager opens an access review of the person's
  grants, before the engine runs, so that it reviews what the old role gave;
- a deactivation from the IdP leaves an offboarding record of what it revoked;
- a denial kept for an Okta id not known yet applies when it appears, each one
  followed by its own consequences before the next.

Every edge that changes people or groups (SCIM, Okta hooks, the System Log
catch-up, reconciliation, HR offboarding, the demo) calls this module, never the
directory's recording functions.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning import text
from provisioning.audit.log import Origin, lock
from provisioning.entitlements import brake, engine
from provisioning.identity import directory
from provisioning.identity.directory import (
    Change,
    IdentityError,
    MembershipFact,
    NewUser,
    external_id_taken,
    keep_pending,
    new_user,
)
from provisioning.identity.models import Group, MembershipSource, User
from provisioning.offboarding.records import record_deactivation
from provisioning.reviews import campaigns
from provisioning.settings import DEFAULTS, Settings

# What edges use from the directory without consequences: checks and kept denials.
__all__ = [
    "IdentityError",
    "MembershipFact",
    "NewUser",
    "add_user",
    "add_users",
    "adopt_group",
    "create_group",
    "create_user",
    "delete_group",
    "delete_user",
    "external_id_taken",
    "keep_pending",
    "new_user",
    "offboard",
    "reinstate",
    "rename_group",
    "set_active",
    "set_group_external_id",
    "set_membership",
    "set_memberships",
    "unclaimed_group",
    "update_user",
]


def follow(
    session: Session, origin: Origin, change: Change | None, settings: Settings = DEFAULTS
) -> engine.Diff | None:
    """The consequences of one recorded change; None when the fact was stale."""
    if change is None:
        return None
    if not change.users:
        return engine.Diff()
    affected = engine.Affected.users(*change.users)
    if change.cause is not None:
        with brake.applied(session, change.cause, settings):
            diff = engine.apply(session, affected, origin)
    else:
        diff = engine.apply(session, affected, origin)
    if change.deactivated is not None:
        record_deactivation(session, origin, change.deactivated, diff)
    return diff


def _settle(session: Session, *, user: User | None = None, group: Group | None = None) -> None:
    """Apply the denials kept for ``user``'s or ``group``'s Okta id, each with its consequences."""
    for origin, change in directory.apply_kept(session, user=user, group=group):
        follow(session, origin, change)


def add_user(session: Session, origin: Origin, new: NewUser) -> User:
    """Add ``new`` (see :func:`~provisioning.identity.directory.add_user`)."""
    user = directory.add_user(session, origin, new)
    _settle(session, user=user)
    return user


def add_users(
    session: Session, origin: Origin, news: Sequence[NewUser]
) -> list[uuid.UUID | IdentityError]:
    """Add many users set-wise (see :func:`~provisioning.identity.directory.add_users`):
    for each, its id or what refused it. Denials kept for their Okta ids apply as for one."""
    results = directory.add_users(session, origin, news)
    added = [r for r in results if not isinstance(r, IdentityError)]
    kept = directory.kept_for(session, [r["external_id"] for r in added if r["external_id"]])
    for row in added:
        if row["external_id"] in kept:
            _settle(session, user=session.get(User, row["id"]))
    return [r if isinstance(r, IdentityError) else r["id"] for r in results]


def create_user(
    session: Session,
    origin: Origin,
    *,
    user_name: str,
    scim_attributes: dict[str, Any] | None = None,
    **fields: Any,
) -> User:
    """Add a user (:func:`new_user`, then :func:`add_user`)."""
    return add_user(
        session, origin, new_user(user_name=user_name, scim_attributes=scim_attributes, **fields)
    )


def set_active(
    session: Session,
    origin: Origin,
    user: User,
    active: bool,
    *,
    published_at: dt.datetime | None = None,
) -> engine.Diff | None:
    """Activate or deactivate a user; deactivation revokes every grant in this transaction.

    Returns None when the fact is older than the one recorded (nothing changed).
    """
    change = directory.set_active(session, origin, user, active, published_at=published_at)
    return follow(session, origin, change)


def set_membership(
    session: Session,
    origin: Origin,
    user: User,
    group: Group,
    present: bool,
    *,
    source: MembershipSource,
    published_at: dt.datetime | None = None,
) -> engine.Diff | None:
    """Record that ``user`` is (or is no longer) in ``group``, then derive their grants again.

    Returns None when the fact is older than the one recorded (nothing changed).
    """
    change = directory.set_membership(
        session, origin, user, group, present, source=source, published_at=published_at
    )
    return follow(session, origin, change)


def set_memberships(
    session: Session, origin: Origin, facts: Iterable[MembershipFact]
) -> tuple[int, engine.Diff | None]:
    """Record many membership facts set-wise, then derive their users' grants again in one
    run of the engine (see :func:`~provisioning.identity.directory.set_memberships`): how
    many memberships changed, and the engine's diff."""
    change = directory.set_memberships(session, origin, facts)
    return change.changed, follow(session, origin, change)


def update_user(
    session: Session, origin: Origin, user: User, *, settings: Settings = DEFAULTS, **fields: Any
) -> engine.Diff | None:
    """Change a user's profile; a change of ``active`` goes through :func:`set_active`.

    A change of department or manager opens an access review campaign over the
    user's grants (:func:`provisioning.reviews.campaigns.on_role_change`, with the
    review settings). Returns the engine's diff when ``active`` was part of the
    change, else None.
    """
    active = fields.pop("active", None)
    change = directory.update_user(session, origin, user, **fields)
    if change.moved:
        # A new department or manager: someone reviews the access the old role gave.
        campaigns.on_role_change(session, origin, user, change.moved, settings)
    diff = None if active is None else set_active(session, origin, user, bool(active))
    if change.linked:
        # After ``active``: a denial kept for this Okta id wins over an untimed activation.
        _settle(session, user=user)
    return diff


def delete_user(session: Session, origin: Origin, user: User) -> engine.Diff:
    """Delete a user: every grant revoked now; the row stays for the audit history."""
    return follow(session, origin, directory.delete_user(session, origin, user))


def offboard(session: Session, origin: Origin, user: User, at: dt.datetime) -> engine.Diff:
    """Mark the person offboarded (since ``at``) and revoke every grant."""
    return follow(session, origin, directory.offboard(session, user, at))


def reinstate(session: Session, origin: Origin, user: User, reason: str) -> engine.Diff:
    """Lift an offboarding: the person's access is derived again from their groups."""
    return follow(session, origin, directory.reinstate(session, origin, user, reason))


def create_group(
    session: Session,
    origin: Origin,
    *,
    display_name: str,
    external_id: str | None = None,
    scim_attributes: dict[str, Any] | None = None,
) -> Group:
    """Add a group (see :func:`~provisioning.identity.directory.create_group`)."""
    group = directory.create_group(
        session,
        origin,
        display_name=display_name,
        external_id=external_id,
        scim_attributes=scim_attributes,
    )
    _settle(session, group=group)
    return group


def adopt_group(
    session: Session,
    origin: Origin,
    *,
    external_id: str,
    display_name: str,
    scim_attributes: dict[str, Any] | None = None,
    by_name: bool = False,
) -> tuple[Group, bool]:
    """The group the IdP knows as ``external_id`` (its Okta id), named ``display_name``:
    the one held, renamed if its name changed, or a new one (with ``scim_attributes``).
    Whether it was held already.

    However the group first came (mapped by its Okta id through the admin API, pushed
    over SCIM, created by an Okta event), it is one group. With ``by_name`` (mapping the
    group by its Okta id), a group pushed over SCIM without an ``externalId`` is it too
    when it is the only group without an IdP id named ``display_name`` (exactly, or else
    differing only in case): it is given the Okta id, audited as an adoption by name
    (a SCIM push with an ``externalId`` names a group of its own). Writers are
    serialised first (the audit chain's head), so two edges recording it at once make
    one group.
    """
    lock(session)
    group = session.scalar(select(Group).where(Group.external_id == external_id))
    if group is None and by_name and (group := unclaimed_group(session, display_name)):
        adoption = f"adopted by its name {display_name!r}: held without an IdP id"
        reason = f"{origin.reason}; {adoption}" if origin.reason else adoption
        adopting = Origin(origin.actor, origin.source, reason)
        set_group_external_id(session, adopting, group, external_id)
    if group is None:
        group = create_group(
            session,
            origin,
            display_name=display_name,
            external_id=external_id,
            scim_attributes=scim_attributes,
        )
        return group, False
    rename_group(session, origin, group, display_name)
    return group, True


def unclaimed_group(
    session: Session, display_name: str, taken: Collection[Any] = ()
) -> Group | None:
    """The one group without an IdP id named ``display_name`` (exactly; else the one whose
    name differs only in case), if exactly one is, leaving out the ids in ``taken``."""
    try:
        key = text.key(display_name, "displayName")
    except text.TextError:
        return None
    unclaimed = select(Group).where(Group.external_id.is_(None)).limit(2 + len(taken))
    for named in (Group.display_name == display_name, Group.display_name_key == key):
        found = [g for g in session.scalars(unclaimed.where(named)) if g.id not in taken]
        if found:
            return found[0] if len(found) == 1 else None
    return None


def rename_group(session: Session, origin: Origin, group: Group, display_name: str) -> None:
    directory.rename_group(session, origin, group, display_name)


def set_group_external_id(
    session: Session, origin: Origin, group: Group, external_id: str | None
) -> None:
    """Change the IdP's id of a group (``externalId``); audited."""
    if directory.set_group_external_id(session, origin, group, external_id):
        _settle(session, group=group)


def delete_group(
    session: Session, origin: Origin, group: Group, *, settings: Settings = DEFAULTS
) -> engine.Diff:
    """Delete a group with its memberships and mappings; revoke what only it justified,
    under the brake (``settings``' mass-revocation limits)."""
    return follow(session, origin, directory.delete_group(session, origin, group), settings)
