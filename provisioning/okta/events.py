"""Okta System Log events, parsed leniently and applied once, in order of publication.

The same handler serves event hook deliveries and System Log catch-up: an
event is identified by its ``uuid`` (the same in both), applied at most once,
and an event older than the fact already recorded changes nothing
(DESIGN invariant 5). Every effect goes through the identity functions, so
the engine grants and revokes in the same transaction, audited with the
event's source.

Handled event types (Okta's event type catalogue):

- ``group.user_membership.add`` / ``.remove``: membership, then grants;
- ``user.lifecycle.deactivate`` / ``.suspend`` / ``.delete.initiated``: user
  inactive, every grant revoked;
- ``user.lifecycle.activate`` / ``.unsuspend`` / ``.reactivate``: active again;
- ``user.lifecycle.create``, ``user.account.update_profile``: user upserted;
- ``group.lifecycle.create``, ``group.profile.update``: group upserted;
- ``group.lifecycle.delete``: group removed, what it justified revoked.

Anything else is recorded as ignored; so is an event whose ``outcome.result``
is not SUCCESS.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.audit.log import Origin, Source
from provisioning.identity import directory
from provisioning.identity.models import Group, MembershipSource, User
from provisioning.okta.models import EventOutcome, SeenEvent

MEMBERSHIP_ADD = "group.user_membership.add"
MEMBERSHIP_REMOVE = "group.user_membership.remove"
DEACTIVATING = {
    "user.lifecycle.deactivate",
    "user.lifecycle.suspend",
    "user.lifecycle.delete.initiated",
}
ACTIVATING = {"user.lifecycle.activate", "user.lifecycle.unsuspend", "user.lifecycle.reactivate"}
PROFILE = {"user.lifecycle.create", "user.account.update_profile"}
GROUP_UPSERT = {"group.lifecycle.create", "group.profile.update"}
GROUP_DELETE = "group.lifecycle.delete"

# Where each handled type finds its subjects: the target types it needs.
NEEDS = {
    MEMBERSHIP_ADD: ("User", "UserGroup"),
    MEMBERSHIP_REMOVE: ("User", "UserGroup"),
    GROUP_DELETE: ("UserGroup",),
    **{t: ("User",) for t in DEACTIVATING | ACTIVATING | PROFILE},
    **{t: ("UserGroup",) for t in GROUP_UPSERT},
}

_SOURCE_TO_MEMBERSHIP = {
    Source.OKTA_HOOK: MembershipSource.OKTA_HOOK,
    Source.OKTA_SYNC: MembershipSource.OKTA_SYNC,
}

# debugContext.debugData keys that carry profile attributes, where Okta sends them.
_DEBUG_PROFILE_KEYS = {
    "employeeNumber": "employee_number",
    "department": "department",
    "managerId": "manager_id",
    "email": "email",
    "firstName": "given_name",
    "lastName": "family_name",
}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Actor(_Lenient):
    id: str | None = None
    type: str | None = None
    alternateId: str | None = None
    displayName: str | None = None


class Target(Actor):
    pass


class Outcome(_Lenient):
    result: str | None = None
    reason: str | None = None


class OktaEvent(_Lenient):
    """One System Log event; many fields can be null and are treated so."""

    uuid: str = Field(min_length=1, max_length=64)
    published: dt.datetime
    eventType: str = Field(min_length=1, max_length=128)
    actor: Actor | None = None
    outcome: Outcome | None = None
    target: list[Target] | None = None
    debugContext: dict[str, Any] | None = None

    @field_validator("published")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

    @property
    def succeeded(self) -> bool:
        result = (self.outcome.result if self.outcome else None) or "SUCCESS"
        return result.strip().upper() == "SUCCESS"

    def first(self, kind: str) -> Target | None:
        for target in self.target or []:
            if target and target.type == kind and target.id:
                return target
        return None

    def problem(self) -> str | None:
        """Why a handled event cannot be applied as sent (None if it can)."""
        for kind in NEEDS.get(self.eventType, ()):
            if self.first(kind) is None:
                return f"event {self.uuid} ({self.eventType}) has no {kind} target with an id"
        return None

    def debug_data(self) -> dict[str, Any]:
        data = (self.debugContext or {}).get("debugData")
        return data if isinstance(data, dict) else {}


def origin_of(event: OktaEvent, source: Source) -> Origin:
    actor = event.actor
    who = (actor.alternateId or actor.id) if actor else None
    return Origin(
        actor=f"okta:{who or 'system'}",
        source=source,
        reason=f"okta event {event.eventType} {event.uuid}",
    )


def apply(session: Session, event: OktaEvent, source: Source) -> EventOutcome | None:
    """Apply one event in the caller's transaction; None if its uuid was seen before."""
    if session.get(SeenEvent, event.uuid) is not None:
        return None
    outcome = EventOutcome.IGNORED
    subject = _subject(event)
    handler = _HANDLERS.get(event.eventType)
    if handler is not None and event.succeeded and event.problem() is None:
        applied = handler(session, event, origin_of(event, source))
        outcome = EventOutcome.APPLIED if applied else EventOutcome.STALE
    session.add(
        SeenEvent(
            uuid=event.uuid,
            event_type=event.eventType,
            published=event.published,
            subject=subject,
            source=str(source),
            outcome=outcome,
        )
    )
    session.flush()
    return outcome


def _subject(event: OktaEvent) -> str | None:
    kinds = NEEDS.get(event.eventType, ())
    target = event.first("UserGroup") if kinds == ("UserGroup",) else event.first("User")
    return target.id if target else None


# -- finding or creating what an event is about -------------------------------


def _user(session: Session, target: Target, origin: Origin, *, create: bool) -> User | None:
    """The user an Okta target names: by Okta id, else by login (then linked)."""
    user = session.scalar(
        select(User).where(User.external_id == target.id, User.deleted_at.is_(None))
    )
    if user is None and target.alternateId:
        user = session.scalar(
            select(User).where(
                User.user_name_key == target.alternateId.lower(), User.deleted_at.is_(None)
            )
        )
        if user is not None and user.external_id is None:
            directory.update_user(session, origin, user, external_id=target.id)
    if user is None and create:
        user = directory.create_user(
            session,
            origin,
            user_name=target.alternateId or target.id,
            external_id=target.id,
            display_name=target.displayName,
            email=target.alternateId if target.alternateId and "@" in target.alternateId else None,
        )
    return user


def _group_deleted_after(session: Session, okta_id: str, published: dt.datetime) -> bool:
    tombstone = session.scalar(
        select(SeenEvent.published).where(
            SeenEvent.subject == okta_id, SeenEvent.event_type == GROUP_DELETE
        )
    )
    return tombstone is not None and tombstone >= published


def _group(session: Session, event: OktaEvent, origin: Origin, *, create: bool) -> Group | None:
    target = event.first("UserGroup")
    assert target is not None
    group = session.scalar(select(Group).where(Group.external_id == target.id))
    if group is None and create and not _group_deleted_after(session, target.id, event.published):
        group = directory.create_group(
            session, origin, display_name=target.displayName or target.id, external_id=target.id
        )
    return group


# -- handlers: each returns False when the event was older than what we know --


def _membership(session: Session, event: OktaEvent, origin: Origin) -> bool:
    present = event.eventType == MEMBERSHIP_ADD
    user = _user(session, event.first("User"), origin, create=present)
    group = _group(session, event, origin, create=present)
    if user is None or group is None:
        # Removing someone we never knew from a group we never knew: nothing to undo.
        return not present
    diff = directory.set_membership(
        session,
        origin,
        user,
        group,
        present,
        source=_SOURCE_TO_MEMBERSHIP[origin.source],
        published_at=event.published,
    )
    return diff is not None


def _status(session: Session, event: OktaEvent, origin: Origin) -> bool:
    active = event.eventType in ACTIVATING
    user = _user(session, event.first("User"), origin, create=active)
    if user is None:
        return True
    return (
        directory.set_active(session, origin, user, active, published_at=event.published)
        is not None
    )


def _profile(session: Session, event: OktaEvent, origin: Origin) -> bool:
    target = event.first("User")
    user = _user(session, target, origin, create=True)
    if user.profile_published_at is not None and event.published < user.profile_published_at:
        return False
    fields: dict[str, Any] = {}
    if target.alternateId:
        fields["user_name"] = target.alternateId
    if target.displayName:
        fields["display_name"] = target.displayName
    for key, name in _DEBUG_PROFILE_KEYS.items():
        value = event.debug_data().get(key)
        if isinstance(value, str) and value:
            fields[name] = value
    directory.update_user(session, origin, user, **fields)
    user.profile_published_at = event.published
    return True


def _group_upsert(session: Session, event: OktaEvent, origin: Origin) -> bool:
    if _group_deleted_after(session, event.first("UserGroup").id, event.published):
        return False
    group = _group(session, event, origin, create=True)
    name = event.first("UserGroup").displayName
    if name:
        directory.rename_group(session, origin, group, name)
    return True


def _group_delete(session: Session, event: OktaEvent, origin: Origin) -> bool:
    group = _group(session, event, origin, create=False)
    if group is not None:
        directory.delete_group(session, origin, group)
    return True


_HANDLERS = {
    MEMBERSHIP_ADD: _membership,
    MEMBERSHIP_REMOVE: _membership,
    GROUP_DELETE: _group_delete,
    **{t: _status for t in DEACTIVATING | ACTIVATING},
    **{t: _profile for t in PROFILE},
    **{t: _group_upsert for t in GROUP_UPSERT},
}
HANDLED = frozenset(_HANDLERS)
