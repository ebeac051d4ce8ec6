"""Okta System Log events, parsed leniently and applied once, in order of publication.

The same handler serves event hook deliveries and System Log catch-up: an
event is identified by its ``uuid`` (the same in both), applied at most once,
and an event older than the fact already recorded changes nothing
(invariant 5 of docs/architecture.md). Every effect goes through the people
lifecycle (:mod:`provisioning.people.lifecycle`), so the engine grants and
revokes in the same transaction, audited with the event's source.

Times from Okta are data, not truth (invariant 8). An event is ordered
at its ``published`` time, unless that is more than the allowed skew
(``PROVISIONING_OKTA_EVENT_SKEW_SECONDS``, from the settings the caller hands
in) after we received it: then at its
receipt, so that a far-future date cannot outrank every later fact. A time
that cannot be represented (an offset that leaves the calendar, years 1 and
9999) is refused. A denial about a user or group we do not know yet is kept
(:func:`provisioning.identity.directory.keep_pending`) until they appear.

One event never holds back another (:func:`take`): each is applied in its
own savepoint, and one that cannot be applied is *parked* with its reason
(:class:`~provisioning.okta.models.ParkedEvent`, and an open finding).
A sample from Okta's console Preview (no target and no actor) is recorded
as a preview and changes nothing.

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
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from provisioning import text
from provisioning.audit.log import Origin, Source
from provisioning.database import utcnow
from provisioning.identity.models import Group, MembershipSource, PendingKind, User
from provisioning.okta.models import EventOutcome, ParkedEvent, SeenEvent
from provisioning.oversight.models import Finding, FindingKind, FindingState, Severity
from provisioning.people import lifecycle
from provisioning.settings import DEFAULTS, Settings

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

# Years a published time may have once in UTC: 1 and 9999 are the calendar's edges,
# where ordering arithmetic overflows; nothing Okta publishes is there.
FIRST_YEAR, LAST_YEAR = 2, 9998


def ordering_time(
    published: dt.datetime, received_at: dt.datetime, settings: Settings = DEFAULTS
) -> dt.datetime:
    """When an event is ordered: ``published``, unless that is more than the allowed skew
    (``settings.okta_event_skew_seconds``) after ``received_at`` (a clock ahead, or a
    forged date): then ``received_at``."""
    skew = dt.timedelta(seconds=settings.okta_event_skew_seconds)
    return received_at if published - received_at > skew else published


def kept_text(value: str) -> str:
    """``value``, refused unless it keeps the character rule (:mod:`provisioning.text`)."""
    return text.check(value, "the value")


# Bounded as the columns they end up in are (an Okta id is a user's externalId and an
# event's subject; an actor becomes "okta:<actor>" in the audit log).
OktaId = Annotated[str, Field(max_length=128), AfterValidator(kept_text)]
Name = Annotated[str, Field(max_length=255), AfterValidator(kept_text)]
ActorName = Annotated[str, Field(max_length=250), AfterValidator(kept_text)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Actor(_Lenient):
    id: ActorName | None = None
    type: Name | None = None
    alternateId: ActorName | None = None
    displayName: Name | None = None


class Target(_Lenient):
    id: OktaId | None = None
    type: Name | None = None
    alternateId: Name | None = None
    displayName: Name | None = None


class Outcome(_Lenient):
    result: str | None = None
    reason: str | None = None


class OktaEvent(_Lenient):
    """One System Log event; many fields can be null and are treated so."""

    uuid: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(kept_text)]
    published: dt.datetime
    eventType: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(kept_text)]
    actor: Actor | None = None
    outcome: Outcome | None = None
    target: list[Target | None] | None = None
    debugContext: dict[str, Any] | None = None

    @field_validator("published")
    @classmethod
    def _representable(cls, value: dt.datetime) -> dt.datetime:
        """In UTC (a naive time is taken as UTC), and inside the calendar with room to spare."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        try:
            value = value.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError(
                "cannot be represented in UTC (its offset leaves the calendar)"
            ) from None
        if not FIRST_YEAR <= value.year <= LAST_YEAR:
            raise ValueError(f"year {value.year} in UTC is out of range")
        return value

    @property
    def preview(self) -> bool:
        """A sample from Okta's console Preview: no target and no actor, nothing to apply."""
        return self.target is None and self.actor is None

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


class EventProblem(ValueError):
    """An event that cannot be applied as sent; it is parked with this reason."""


def origin_of(event: OktaEvent, source: Source) -> Origin:
    actor = event.actor
    who = (actor.alternateId or actor.id) if actor else None
    return Origin(
        actor=f"okta:{who or 'system'}",
        source=source,
        reason=f"okta event {event.eventType} {event.uuid}",
    )


@dataclass(frozen=True)
class Taken:
    """What became of one event: its outcome (None: its uuid was seen before), and whether
    it was ordered at its receipt rather than at its published time."""

    outcome: EventOutcome | None
    clamped: bool = False

    @property
    def name(self) -> str:
        return "duplicate" if self.outcome is None else str(self.outcome)


def take(
    session: Session,
    raw: Any,
    source: Source,
    *,
    received_at: dt.datetime,
    delivery_id: int | None = None,
    park_database_errors: bool = False,
    settings: Settings = DEFAULTS,
) -> Taken:
    """Take one event as received (any JSON value), in the caller's transaction.

    Applied once, in its own savepoint: an event that cannot be applied (not a
    usable event, a time that cannot be represented, a handled type without its
    subjects, a failure while applying it) is rolled back alone and parked with
    the reason. An error of the database itself is raised, so that the caller
    retries the whole delivery or page, unless ``park_database_errors`` (the
    retries are spent). ``settings`` are the service's (the allowed skew, the brake's
    limits, the review settings).
    """
    key = _uuid_of(raw)
    if key is not None and session.get(SeenEvent, key) is not None:
        return Taken(None)
    try:
        event = OktaEvent.model_validate(raw)
    except ValidationError as exc:
        return _park(session, raw, source, _invalid(exc), delivery_id, key)
    if event.preview:
        return _record(session, event, source, EventOutcome.PREVIEW, event.published)
    if event.succeeded and event.eventType in _HANDLERS and (problem := event.problem()):
        return _park(session, raw, source, problem, delivery_id, key, event.published)
    try:
        with session.begin_nested():
            return _apply(session, event, source, received_at, settings)
    except DBAPIError as exc:
        if not park_database_errors:
            raise
        reason = f"the database refused it: {exc.orig}"
    except Exception as exc:  # anything else belongs to this event alone
        reason = f"{type(exc).__name__}: {exc}"
    return _park(session, raw, source, reason, delivery_id, key, event.published)


def apply(
    session: Session,
    event: OktaEvent,
    source: Source,
    *,
    received_at: dt.datetime | None = None,
    settings: Settings = DEFAULTS,
) -> EventOutcome | None:
    """Apply one valid event in the caller's transaction; None if its uuid was seen before.

    ``received_at`` (now by default) bounds how far in the future its time is believed.
    """
    if session.get(SeenEvent, event.uuid) is not None:
        return None
    return _apply(session, event, source, received_at or utcnow(), settings).outcome


def _apply(
    session: Session,
    event: OktaEvent,
    source: Source,
    received_at: dt.datetime,
    settings: Settings,
) -> Taken:
    at = ordering_time(event.published, received_at, settings)
    outcome = EventOutcome.IGNORED
    handler = _HANDLERS.get(event.eventType)
    if handler is not None and event.succeeded:
        outcome = handler(session, event, origin_of(event, source), at, settings)
    return _record(session, event, source, outcome, at)


def _record(
    session: Session, event: OktaEvent, source: Source, outcome: EventOutcome, at: dt.datetime
) -> Taken:
    session.add(
        SeenEvent(
            uuid=event.uuid,
            event_type=event.eventType,
            published=event.published,
            ordered_at=at,
            subject=_subject(event),
            source=str(source),
            outcome=outcome,
        )
    )
    session.flush()
    return Taken(outcome, clamped=at != event.published)


def _uuid_of(raw: Any) -> str | None:
    """The event's uuid, if it has one usable as a key (to know it when it comes again)."""
    value = raw.get("uuid") if isinstance(raw, dict) else None
    if isinstance(value, str) and 0 < len(value) <= 64 and "\x00" not in value:
        return value
    return None


def _invalid(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "event"
    more = len(error.errors()) - 1
    return f"{where}: {first['msg']}" + (f" (and {more} more)" if more else "")


def _park(
    session: Session,
    raw: Any,
    source: Source,
    reason: str,
    delivery_id: int | None,
    key: str | None,
    published: dt.datetime | None = None,
) -> Taken:
    """Keep an event that cannot be applied, with the reason, and open a finding for it."""
    reason = reason.replace("\x00", "\\0")[:2000]
    event_type = raw.get("eventType") if isinstance(raw, dict) else None
    if not (isinstance(event_type, str) and len(event_type) <= 128 and "\x00" not in event_type):
        event_type = None
    if key is not None:
        session.add(
            SeenEvent(
                uuid=key,
                event_type=event_type or "",
                published=published,
                ordered_at=None,
                subject=None,
                source=str(source),
                outcome=EventOutcome.PARKED,
            )
        )
    parked = ParkedEvent(
        uuid=key,
        event_type=event_type,
        source=str(source),
        delivery_id=delivery_id,
        reason=reason,
        event=raw,
    )
    session.add(parked)
    session.flush()
    session.add(
        Finding(
            kind=FindingKind.PARKED_OKTA_EVENT,
            severity=Severity.HIGH,
            subject_type="okta_event",
            subject_id=str(parked.id),
            evidence={
                "uuid": key,
                "event_type": event_type,
                "source": str(source),
                "delivery_id": delivery_id,
                "reason": reason,
            },
            state=FindingState.OPEN,
        )
    )
    session.flush()
    return Taken(EventOutcome.PARKED)


def _subject(event: OktaEvent) -> str | None:
    kinds = NEEDS.get(event.eventType, ())
    target = event.first("UserGroup") if kinds == ("UserGroup",) else event.first("User")
    return target.id if target else None


# -- finding or creating what an event is about -------------------------------


def _user(
    session: Session, target: Target, origin: Origin, settings: Settings, *, create: bool
) -> User | None:
    """The user an Okta target names: by Okta id, else by login when that user has no Okta
    id yet (then linked). A user holding another Okta id is another person."""
    user = session.scalar(
        select(User).where(User.external_id == target.id, User.deleted_at.is_(None))
    )
    if user is None and target.alternateId:
        user = session.scalar(
            select(User).where(
                User.user_name_key == text.fold(target.alternateId),
                User.external_id.is_(None),
                User.deleted_at.is_(None),
            )
        )
        if user is not None:
            lifecycle.update_user(session, origin, user, settings=settings, external_id=target.id)
    if user is None and create:
        user = lifecycle.create_user(
            session,
            origin,
            user_name=target.alternateId or target.id,
            external_id=target.id,
            display_name=target.displayName,
            email=target.alternateId if target.alternateId and "@" in target.alternateId else None,
        )
    return user


def _group_deleted_after(session: Session, okta_id: str, at: dt.datetime) -> bool:
    tombstone = session.scalar(
        select(func.max(SeenEvent.ordered_at)).where(
            SeenEvent.subject == okta_id, SeenEvent.event_type == GROUP_DELETE
        )
    )
    return tombstone is not None and tombstone >= at


def _group(
    session: Session, event: OktaEvent, origin: Origin, at: dt.datetime, *, create: bool
) -> Group | None:
    target = event.first("UserGroup")
    assert target is not None
    group = session.scalar(select(Group).where(Group.external_id == target.id))
    if group is None and create and not _group_deleted_after(session, target.id, at):
        group = lifecycle.create_group(
            session, origin, display_name=target.displayName or target.id, external_id=target.id
        )
    return group


# -- handlers: each says what became of the event ------------------------------


def _done(diff: Any) -> EventOutcome:
    """A change function's answer: None when the fact was older than the one recorded."""
    return EventOutcome.STALE if diff is None else EventOutcome.APPLIED


def _membership(
    session: Session, event: OktaEvent, origin: Origin, at: dt.datetime, settings: Settings
) -> EventOutcome:
    present = event.eventType == MEMBERSHIP_ADD
    okta_user = event.first("User")
    user = _user(session, okta_user, origin, settings, create=present)
    group = _group(session, event, origin, at, create=present)
    if present and group is None:
        return EventOutcome.STALE  # the group was deleted after this add
    if user is None or group is None:
        # A removal naming someone or a group not known yet: kept until they appear.
        lifecycle.keep_pending(
            session,
            origin,
            PendingKind.REMOVAL,
            user_external_id=okta_user.id,
            group_external_id=event.first("UserGroup").id,
            published_at=at,
        )
        return EventOutcome.PENDING
    diff = lifecycle.set_membership(
        session,
        origin,
        user,
        group,
        present,
        source=_SOURCE_TO_MEMBERSHIP[origin.source],
        published_at=at,
    )
    return _done(diff)


def _status(
    session: Session, event: OktaEvent, origin: Origin, at: dt.datetime, settings: Settings
) -> EventOutcome:
    active = event.eventType in ACTIVATING
    okta_user = event.first("User")
    user = _user(session, okta_user, origin, settings, create=active)
    if user is None:
        # A deactivation of someone not known yet: kept, so that their late create or
        # activation, published before it, does not make them active.
        lifecycle.keep_pending(
            session,
            origin,
            PendingKind.DEACTIVATION,
            user_external_id=okta_user.id,
            published_at=at,
        )
        return EventOutcome.PENDING
    return _done(lifecycle.set_active(session, origin, user, active, published_at=at))


def _profile(
    session: Session, event: OktaEvent, origin: Origin, at: dt.datetime, settings: Settings
) -> EventOutcome:
    target = event.first("User")
    fields: dict[str, Any] = {}
    if target.alternateId:
        fields["user_name"] = target.alternateId
    if target.displayName:
        fields["display_name"] = target.displayName
    columns = User.__table__.c
    for key, name in _DEBUG_PROFILE_KEYS.items():
        value = event.debug_data().get(key)
        if isinstance(value, str) and value:
            if len(value) > columns[name].type.length or text.problem(value) is not None:
                raise EventProblem(f"debugData.{key} is too long or holds a control character")
            fields[name] = value
    user = _user(session, target, origin, settings, create=True)
    if user.profile_published_at is not None and at < user.profile_published_at:
        return EventOutcome.STALE
    lifecycle.update_user(session, origin, user, settings=settings, **fields)
    user.profile_published_at = at
    return EventOutcome.APPLIED


def _group_upsert(
    session: Session, event: OktaEvent, origin: Origin, at: dt.datetime, settings: Settings
) -> EventOutcome:
    if _group_deleted_after(session, event.first("UserGroup").id, at):
        return EventOutcome.STALE
    group = _group(session, event, origin, at, create=True)
    name = event.first("UserGroup").displayName
    if name:
        lifecycle.rename_group(session, origin, group, name)
    return EventOutcome.APPLIED


def _group_delete(
    session: Session, event: OktaEvent, origin: Origin, at: dt.datetime, settings: Settings
) -> EventOutcome:
    group = _group(session, event, origin, at, create=False)
    if group is not None:
        lifecycle.delete_group(session, origin, group, settings=settings)
    return EventOutcome.APPLIED


_HANDLERS = {
    MEMBERSHIP_ADD: _membership,
    MEMBERSHIP_REMOVE: _membership,
    GROUP_DELETE: _group_delete,
    **{t: _status for t in DEACTIVATING | ACTIVATING},
    **{t: _profile for t in PROFILE},
    **{t: _group_upsert for t in GROUP_UPSERT},
}
HANDLED = frozenset(_HANDLERS)
