"""Recording facts about users, groups and memberships: audited, order-safe; each says what changed.

Facts from Okta carry the time Okta published them. A fact older than the one
already recorded for the same user status or membership changes nothing
(invariant 5 of docs/architecture.md), and repeating a fact changes nothing
either. At the same time, a denial (inactive, not a member) wins. A denial about
a user or group not known yet is kept (:func:`keep_pending`) and applied when
they appear (:func:`apply_kept`), by whatever path creates them or gives them
their Okta id (invariant 8).

This module records facts and returns what changed (:class:`Change`); it never
acts on them. :mod:`provisioning.people.lifecycle` turns changes into their
consequences (the engine, reviews, offboarding records), and every edge calls it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, make_transient_to_detached

from provisioning import text
from provisioning.audit.log import Entry, Origin, Source, lock, record
from provisioning.database import chunked, utcnow
from provisioning.entitlements.models import Mapping
from provisioning.hotpath import Prepared, PreparedWrite
from provisioning.identity.models import (
    Group,
    Membership,
    MembershipSource,
    PendingFact,
    PendingKind,
    User,
)

# A change of these is a change of role: it starts an access review of the user's grants.
ROLE_FIELDS = ("department", "manager_id")

_USER_FIELDS = (
    "user_name",
    "external_id",
    "display_name",
    "given_name",
    "family_name",
    "email",
    "employee_number",
    "department",
    "manager_id",
    "active",
)


class IdentityError(ValueError):
    """A user or group change that cannot be made; nothing was changed."""


@dataclass(frozen=True)
class Change:
    """What a recorded fact changed: the input of its consequences.

    ``users``: whose access must be derived again (none: nothing to derive);
    ``deactivated``: a user who was active and is no longer; ``moved``: the role
    fields that changed, each as (before, after); ``cause``: a mass change (a group
    deleted) whose revocations the brake weighs; ``linked``: the user was given an
    Okta id, so denials kept for it may apply now.
    """

    users: tuple[uuid.UUID, ...] = ()
    deactivated: User | None = None
    moved: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    cause: str | None = None
    linked: bool = False
    changed: int = 0  # of many facts (set_memberships): how many changed something


def pattern(query: str) -> str:
    """A LIKE pattern (escape ``\\``) finding ``query`` in a folded key column
    (:func:`provisioning.text.fold`)."""
    escaped = text.fold(query).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def matching(query: str) -> ColumnElement[bool]:
    """People whose userName, display name or email contains ``query``, compared folded,
    as the admin API and the console search them."""
    found = pattern(query)
    return or_(
        User.user_name_key.like(found, escape="\\"),
        User.display_name_key.like(found, escape="\\"),
        User.email_key.like(found, escape="\\"),
    )


def groups_of(session: Session, user_id: uuid.UUID) -> list[Group]:
    """The groups a person is a present member of, by display name."""
    return list(
        session.scalars(
            select(Group)
            .join(Membership, Membership.group_id == Group.id)
            .where(Membership.user_id == user_id, Membership.present.is_(True))
            .order_by(Group.display_name_key)
        )
    )


def user_state(user: User) -> dict[str, Any]:
    return {name: getattr(user, name) for name in _USER_FIELDS}


def _newer(published_at: dt.datetime | None, recorded: dt.datetime | None, *, deny: bool) -> bool:
    """A fact may apply unless both times are known and it is older than the recorded one.

    At the same time only a denial applies: deny wins a tie, whichever arrives first.
    """
    if published_at is None or recorded is None:
        return True
    return published_at > recorded or (deny and published_at == recorded)


# Built once: a statement's construction costs more than its run on SQLite.
_EXTERNAL_ID_TAKEN = select(User.id).where(
    User.external_id == bindparam("external_id"),
    User.deleted_at.is_(None),
    User.id != bindparam("own"),
)
_NO_ID = uuid.UUID(int=0)
_USERS = User.__table__
# A new user's row in one statement, without the unit of work. A userName or externalId
# a live user already has makes it insert nothing: the unique indexes decide, so two
# concurrent creates of one name cannot both pass, and nothing fails half-way (an error
# would abort a PostgreSQL transaction). The count of rows inserted says which it was.
# Run on the driver's cursor (provisioning.hotpath.PreparedWrite).
_INSERT_USER = {
    name: PreparedWrite(dialect.insert(_USERS).on_conflict_do_nothing())
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


def _added(session: Session, row: User | Group) -> None:
    """Insert ``row``, a new user or group: not yet modified, so updated when created."""
    row.created_at = row.updated_at = utcnow()
    session.add(row)
    session.flush()


@dataclass(frozen=True)
class NewUser:
    """A user to be created (:func:`add_user`): its row's values, checked, built before
    the transaction, which need not wait for them. Its times are set when it is added."""

    values: dict[str, Any]


def new_user(
    *, user_name: str, scim_attributes: dict[str, Any] | None = None, **fields: Any
) -> NewUser:
    """A user to create; ``user_name`` is unique without regard to case.

    ``scim_attributes`` are the attributes a SCIM client sent that the service does
    not model, kept to be returned unchanged.
    """
    unknown = set(fields) - set(_USER_FIELDS)
    if unknown:
        raise IdentityError(f"unknown user field(s): {', '.join(sorted(unknown))}")
    values = dict.fromkeys(_USERS.columns.keys())
    values.update(fields)
    values.update(
        id=uuid.uuid4(),
        user_name=user_name,
        active=fields.get("active", True),
        scim_attributes=scim_attributes,
        version=1,
    )
    values.update({f"{name}_key": User.key_of(name, values[name]) for name in User.KEYED})
    return NewUser(values)


def add_user(session: Session, origin: Origin, new: NewUser) -> User:
    """Insert ``new``, audited; :class:`IdentityError` (and nothing written) when its
    userName or externalId is taken. A new user is not yet modified: its ``updated_at``
    is its ``created_at``."""
    (added,) = add_users(session, origin, [new])
    if isinstance(added, IdentityError):
        raise added
    user = User(**added)
    make_transient_to_detached(user)  # as if read back: persistent once added, no INSERT
    session.add(user)
    return user


def add_users(
    session: Session, origin: Origin, news: Sequence[NewUser]
) -> list[dict[str, Any] | IdentityError]:
    """Insert each of ``news`` set-wise, one audit event per user inserted; for each, in
    order, the values of its row, or the :class:`IdentityError` that refused it (its
    userName or externalId taken, by a live user or by one before it in ``news``).

    The unique indexes decide, as for one (``INSERT ... ON CONFLICT DO NOTHING``, row
    after row in order): the rows inserted are then read back by id, so a batch refuses
    exactly what the same users added one by one would.
    """
    session.flush()  # what the session holds goes first, as autoflush would have it
    now = utcnow()
    rows = [{**new.values, "created_at": now, "updated_at": now} for new in news]
    connection = session.connection()
    insert = _INSERT_USER[connection.dialect.name]
    if len(rows) == 1:
        inserted = {rows[0]["id"]} if insert.run(connection, rows[0]) == 1 else set()
    else:
        inserted = set()
        for chunk in chunked(rows):
            ids = [row["id"] for row in chunk]
            if insert.run_each(connection, list(chunk)) == len(chunk):
                inserted.update(ids)  # every one: nothing to read back
            else:
                inserted.update(session.scalars(select(User.id).where(User.id.in_(ids))))
    results: list[dict[str, Any] | IdentityError] = [
        row
        if row["id"] in inserted
        else IdentityError(_taken(session, row, (r["id"] for r in rows[i + 1 :])))
        for i, row in enumerate(rows)
    ]
    record(
        session,
        origin,
        [
            Entry(
                "user.created",
                "user",
                str(row["id"]),
                user_id=row["id"],
                after={name: row[name] for name in _USER_FIELDS},
            )
            for row in rows
            if row["id"] in inserted
        ],
    )
    return results


def external_id_taken(
    session: Session, external_id: str | None, own: uuid.UUID | None = None
) -> bool:
    """Whether a live user other than ``own`` has ``external_id``."""
    if external_id is None:
        return False
    params = {"external_id": external_id, "own": own or _NO_ID}
    return session.execute(_EXTERNAL_ID_TAKEN, params).first() is not None


def _taken(session: Session, values: dict[str, Any], later: Iterable[uuid.UUID] = ()) -> str:
    """Why a new user's row was not inserted: what a live user already had then (not one
    of ``later``, inserted after it)."""
    external_id = values["external_id"]
    if external_id is not None:
        holder = session.scalar(
            select(User.id).where(User.external_id == external_id, User.deleted_at.is_(None))
        )
        if holder is not None and holder not in set(later):
            return f"externalId {external_id!r} is already taken"
    return f"userName {values['user_name']!r} is already taken"


def set_active(
    session: Session,
    origin: Origin,
    user: User,
    active: bool,
    *,
    published_at: dt.datetime | None = None,
) -> Change | None:
    """Record that a user is active or not.

    Returns None when the fact is older than the one recorded (nothing changed).
    """
    if not _newer(published_at, user.status_published_at, deny=not active):
        return None
    if published_at is not None:
        user.status_published_at = published_at
    deactivated = user.active and not active
    if user.active != active:
        before = user_state(user)
        user.active = active
        session.flush()
        record(
            session,
            origin,
            [
                Entry(
                    "user.activated" if active else "user.deactivated",
                    "user",
                    str(user.id),
                    user_id=user.id,
                    before=before,
                    after=user_state(user),
                )
            ],
        )
    return Change(users=(user.id,), deactivated=user if deactivated else None)


def create_group(
    session: Session,
    origin: Origin,
    *,
    display_name: str,
    external_id: str | None = None,
    scim_attributes: dict[str, Any] | None = None,
) -> Group:
    """Add a group; as for :func:`new_user`, ``scim_attributes`` are kept unchanged, and
    the new group is not yet modified."""
    group = Group(display_name=display_name, external_id=external_id)
    group.scim_attributes = scim_attributes
    _added(session, group)
    record(
        session,
        origin,
        [
            Entry(
                "group.created",
                "group",
                str(group.id),
                after={"display_name": display_name, "external_id": external_id},
            )
        ],
    )
    return group


_TOUCH = (
    update(Group.__table__)
    .where(Group.__table__.c.id == bindparam("group_id"))
    .values(version=Group.__table__.c.version + 1, updated_at=bindparam("now"))
)


def _touch(session: Session, group: Group) -> None:
    """A new version (SCIM ETag) and lastModified for ``group``, whose members changed.

    Members are part of the group's resource, whichever edge changed them (SCIM, an
    Okta hook, a reconciliation run). An increment in SQL, after the audit chain's
    head (the order every writer takes locks in): concurrent changes to one group's
    members queue on its row instead of failing on a version read before.
    """
    lock(session)
    session.connection().execute(_TOUCH, {"group_id": group.id, "now": utcnow()})
    if group in session:
        session.expire(group, ["version", "updated_at"])


def set_membership(
    session: Session,
    origin: Origin,
    user: User,
    group: Group,
    present: bool,
    *,
    source: MembershipSource,
    published_at: dt.datetime | None = None,
) -> Change | None:
    """Record that ``user`` is (or is no longer) in ``group``.

    Returns None when the fact is older than the one recorded (nothing changed).
    """
    membership = session.get(Membership, (user.id, group.id))
    if membership is not None and not _newer(
        published_at, membership.published_at, deny=not present
    ):
        return None
    if membership is None:
        if not present:
            if published_at is not None:
                # Not a member, and since when: an older add that arrives later loses.
                session.add(
                    Membership(
                        user_id=user.id,
                        group_id=group.id,
                        present=False,
                        source=source,
                        published_at=published_at,
                    )
                )
                session.flush()
            return Change()
        membership = Membership(user_id=user.id, group_id=group.id, present=True, source=source)
        session.add(membership)
        changed = True
    else:
        changed = membership.present != present
        membership.present = present
        membership.source = source
    if published_at is not None:
        membership.published_at = published_at
    session.flush()
    if changed:
        _touch(session, group)
        record(
            session,
            origin,
            [_membership_entry(user.id, group, present, source)],
        )
    return Change(users=(user.id,))


@dataclass(frozen=True)
class MembershipFact:
    """That a user is (or is no longer) in a group, for :func:`set_memberships`."""

    user_id: uuid.UUID
    group: Group
    present: bool
    source: MembershipSource
    published_at: dt.datetime | None = None
    reason: str | None = None  # of this fact, beside the origin's


_MEMBERSHIPS = Membership.__table__
_INSERT_MEMBERSHIP = PreparedWrite(_MEMBERSHIPS.insert())
_UPDATE_MEMBERSHIP = PreparedWrite(
    _MEMBERSHIPS.update()
    .where(
        _MEMBERSHIPS.c.user_id == bindparam("u"),
        _MEMBERSHIPS.c.group_id == bindparam("g"),
    )
    .values(
        present=bindparam("present"),
        source=bindparam("source"),
        published_at=bindparam("published_at"),
        updated_at=bindparam("updated_at"),
    )
)
_TOUCH_WRITE = PreparedWrite(_TOUCH)


def set_memberships(session: Session, origin: Origin, facts: Iterable[MembershipFact]) -> Change:
    """Record many membership facts set-wise, each as :func:`set_membership` would in turn
    (the same ordering rule, one audit event per membership changed, each changed group
    touched once); the users of the facts that were not stale are to derive again.

    Its writes are Core statements: the session must hold no :class:`Membership` of
    these users that it means to use again unexpired.
    """
    facts = list(facts)
    session.flush()
    known: dict[tuple[uuid.UUID, uuid.UUID], tuple[bool, dt.datetime | None]] = {}
    users = sorted({f.user_id for f in facts})
    groups = {f.group.id for f in facts}
    for chunk in chunked(users):
        query = select(
            Membership.user_id, Membership.group_id, Membership.present, Membership.published_at
        ).where(Membership.user_id.in_(chunk))
        for user_id, group_id, present, published_at in session.execute(query):
            if group_id in groups:
                known[(user_id, group_id)] = (present, published_at)
    now = utcnow()
    inserts: dict[tuple[uuid.UUID, uuid.UUID], dict[str, Any]] = {}
    updates: dict[tuple[uuid.UUID, uuid.UUID], dict[str, Any]] = {}
    touched: dict[uuid.UUID, Group] = {}
    entries: list[Entry] = []
    affected: dict[uuid.UUID, None] = {}
    for fact in facts:
        pair = (fact.user_id, fact.group.id)
        before = known.get(pair)
        if before is not None and not _newer(fact.published_at, before[1], deny=not fact.present):
            continue
        affected[fact.user_id] = None
        if before is None and not fact.present and fact.published_at is None:
            continue  # not a member, and no time to keep: nothing to record
        published_at = fact.published_at
        if published_at is None and before is not None:
            published_at = before[1]
        row = {
            "user_id": fact.user_id,
            "group_id": fact.group.id,
            "present": fact.present,
            "source": fact.source,
            "published_at": published_at,
            "updated_at": now,
        }
        if pair in inserts or before is None:
            inserts[pair] = row
        else:
            updates[pair] = row
        changed = fact.present if before is None else before[0] != fact.present
        known[pair] = (fact.present, published_at)
        if changed:
            touched[fact.group.id] = fact.group
            entries.append(
                _membership_entry(fact.user_id, fact.group, fact.present, fact.source, fact.reason)
            )
    connection = session.connection()
    for chunk in chunked(list(inserts.values())):
        _INSERT_MEMBERSHIP.run_each(connection, list(chunk))
    params = [
        {"u": r["user_id"], "g": r["group_id"], **{k: r[k] for k in _UPDATED}}
        for r in updates.values()
    ]
    for chunk in chunked(params):
        _UPDATE_MEMBERSHIP.run_each(connection, list(chunk))
    if touched:
        lock(session)
        _TOUCH_WRITE.run_each(connection, [{"group_id": g, "now": now} for g in sorted(touched)])
        for group in touched.values():
            if group in session:
                session.expire(group, ["version", "updated_at"])
    for held in list(session.identity_map.values()):
        if isinstance(held, Membership):
            session.expire(held)
    record(session, origin, entries)
    return Change(users=tuple(affected), changed=len(entries))


_UPDATED = ("present", "source", "published_at", "updated_at")


def _membership_entry(
    user_id: uuid.UUID,
    group: Group,
    present: bool,
    source: MembershipSource,
    reason: str | None = None,
) -> Entry:
    return Entry(
        "membership.added" if present else "membership.removed",
        "membership",
        f"{group.id}/{user_id}",
        user_id=user_id,
        reason=reason,
        after={"group": group.display_name, "present": present, "source": source},
    )


def update_user(session: Session, origin: Origin, user: User, **fields: Any) -> Change:
    """Record a change of a user's profile (``active`` is :func:`set_active`'s).

    The change says which role fields moved (department, manager) and whether the
    user was given an Okta id.
    """
    unknown = set(fields) - set(_USER_FIELDS)
    if unknown:
        raise IdentityError(f"unknown user field(s): {', '.join(sorted(unknown))}")
    if "active" in fields:
        raise IdentityError("a change of active is recorded by set_active")
    new_name = fields.get("user_name")
    for name in User.KEYED:  # refused before anything changes
        if name in fields:
            User.key_of(name, fields[name])
    new_key = User.key_of("user_name", new_name)
    if new_key is not None and new_key != user.user_name_key:
        clash = session.scalar(
            select(User.id).where(
                User.user_name_key == new_key,
                User.deleted_at.is_(None),
                User.id != user.id,
            )
        )
        if clash is not None:
            raise IdentityError(f"userName {new_name!r} is already taken")
    before = user_state(user)
    for name, value in fields.items():
        setattr(user, name, value)
    linked = user.external_id is not None and user.external_id != before["external_id"]
    after = user_state(user)
    moved: dict[str, tuple[Any, Any]] = {}
    if after != before:
        session.flush()
        changed = sorted(k for k in after if after[k] != before[k])
        record(
            session,
            origin,
            [
                Entry(
                    "user.updated",
                    "user",
                    str(user.id),
                    user_id=user.id,
                    before={k: before[k] for k in changed},
                    after={k: after[k] for k in changed},
                )
            ],
        )
        moved = {k: (before[k], after[k]) for k in changed if k in ROLE_FIELDS}
    return Change(moved=moved, linked=linked)


def delete_user(session: Session, origin: Origin, user: User) -> Change:
    """Record that a user is deleted; the row stays for the audit history."""
    user.deleted_at = utcnow()
    session.flush()
    record(
        session,
        origin,
        [Entry("user.deleted", "user", str(user.id), user_id=user.id, before=user_state(user))],
    )
    return Change(users=(user.id,))


def offboard(session: Session, user: User, at: dt.datetime) -> Change:
    """Record that a user is offboarded (an HR or admin offboarding), unless already; the
    offboarding's own record is audited by :mod:`provisioning.offboarding.requests`."""
    if user.offboarded_at is None:
        user.offboarded_at = at
    session.flush()
    return Change(users=(user.id,))


def reinstate(session: Session, origin: Origin, user: User, reason: str) -> Change:
    """Record that an offboarding is lifted; audited with ``reason``."""
    before = user.offboarded_at
    user.offboarded_at = None
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "user.reinstated",
                "user",
                str(user.id),
                user_id=user.id,
                reason=reason,
                before={"offboarded_at": before},
            )
        ],
    )
    return Change(users=(user.id,))


def rename_group(session: Session, origin: Origin, group: Group, display_name: str) -> None:
    if group.display_name == display_name:
        return
    before = group.display_name
    group.display_name = display_name
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "group.renamed",
                "group",
                str(group.id),
                before={"display_name": before},
                after={"display_name": display_name},
            )
        ],
    )


def delete_group(session: Session, origin: Origin, group: Group) -> Change:
    """Delete a group with its memberships and mappings; its members' access is to derive
    again, as one mass change."""
    members = list(
        session.scalars(select(Membership.user_id).where(Membership.group_id == group.id))
    )
    mappings = list(session.scalars(select(Mapping).where(Mapping.group_id == group.id)))
    entries = [
        Entry(
            "mapping.deleted",
            "mapping",
            str(m.id),
            reason="group deleted",
            before={"group_id": m.group_id, "connector_id": m.connector_id},
        )
        for m in mappings
    ]
    entries.append(
        Entry(
            "group.deleted",
            "group",
            str(group.id),
            before={"display_name": group.display_name, "external_id": group.external_id},
        )
    )
    for mapping in mappings:
        session.delete(mapping)
    session.execute(delete(Membership).where(Membership.group_id == group.id))
    session.delete(group)
    session.flush()
    record(session, origin, entries)
    return Change(users=tuple(members), cause=f"group {group.display_name!r} deleted")


def set_group_external_id(
    session: Session, origin: Origin, group: Group, external_id: str | None
) -> bool:
    """Change the IdP's id of a group (``externalId``); audited. Whether it changed."""
    if group.external_id == external_id:
        return False
    before = group.external_id
    group.external_id = external_id
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "group.updated",
                "group",
                str(group.id),
                before={"external_id": before},
                after={"external_id": external_id},
            )
        ],
    )
    return True


# -- denials about users and groups not known yet ------------------------------


def keep_pending(
    session: Session,
    origin: Origin,
    kind: PendingKind,
    *,
    user_external_id: str,
    group_external_id: str | None = None,
    published_at: dt.datetime,
) -> None:
    """Keep a denial about a user (or a membership) whose user or group is not known yet.

    It is applied with its published time when they appear (:func:`apply_kept`):
    created by any path (:func:`add_user`, :func:`create_group`) or given the Okta id
    (:func:`update_user`, :func:`set_group_external_id`).
    """
    session.add(
        PendingFact(
            kind=kind,
            user_external_id=user_external_id,
            group_external_id=group_external_id,
            published_at=published_at,
            actor=origin.actor,
            source=str(origin.source),
            reason=origin.reason,
        )
    )
    session.flush()


_KEPT_FOR_USER, _KEPT_FOR_GROUP = (
    Prepared(select(PendingFact.id).where(column == bindparam("okta_id")).limit(1))
    for column in (PendingFact.user_external_id, PendingFact.group_external_id)
)


def kept_for(session: Session, okta_ids: Sequence[str]) -> set[str]:
    """Which of these users' Okta ids have denials kept (:func:`keep_pending`)."""
    found: set[str] = set()
    for chunk in chunked(okta_ids):
        found.update(
            session.scalars(
                select(PendingFact.user_external_id)
                .where(PendingFact.user_external_id.in_(chunk))
                .distinct()
            )
        )
    return found


def apply_kept(
    session: Session, *, user: User | None = None, group: Group | None = None
) -> Iterator[tuple[Origin, Change | None]]:
    """Record the kept denials naming ``user`` or ``group`` whose subjects are all known now.

    Oldest first, each with its published time and its own origin, through
    :func:`set_active` and :func:`set_membership`: an event published after it
    still wins, and a fact without a time (a SCIM create) does not outrank it.
    Yields each one's origin and change as it is recorded, so that its
    consequences follow it before the next one is recorded.
    """
    if user is not None:
        okta_id, kept, mine = user.external_id, _KEPT_FOR_USER, PendingFact.user_external_id
    else:
        assert group is not None
        okta_id, kept, mine = group.external_id, _KEPT_FOR_GROUP, PendingFact.group_external_id
    if okta_id is None:
        return
    # Nearly always none: asked on the driver's cursor, as cheaply as a create allows.
    if kept.first(session.connection(), {"okta_id": okta_id}) is None:
        return
    facts = session.scalars(
        select(PendingFact)
        .where(mine == okta_id)
        .order_by(PendingFact.published_at, PendingFact.id)
    ).all()
    for fact in facts:
        origin = Origin(fact.actor, Source(fact.source), fact.reason)
        who = user or session.scalar(
            select(User).where(User.external_id == fact.user_external_id, User.deleted_at.is_(None))
        )
        if who is None:
            continue
        if fact.kind == PendingKind.DEACTIVATION:
            yield origin, set_active(session, origin, who, False, published_at=fact.published_at)
        else:
            where = group or session.scalar(
                select(Group).where(Group.external_id == fact.group_external_id)
            )
            if where is None:
                continue
            source = MembershipSource(fact.source)
            yield (
                origin,
                set_membership(
                    session,
                    origin,
                    who,
                    where,
                    False,
                    source=source,
                    published_at=fact.published_at,
                ),
            )
        session.delete(fact)
    session.flush()


def person(session: Session, reference: str | None) -> User | None:
    """The eligible (active) user ``reference`` names: by our id, Okta id (``externalId``),
    userName or email, the first that matches; None if none does.

    How a token's subject, a static token's binding or a ``manager`` attribute names a
    person of the directory.
    """
    if not reference or len(reference) > 320:
        return None
    try:
        as_id: uuid.UUID | None = uuid.UUID(reference)
    except ValueError:
        as_id = None
    folded = text.fold(reference)
    candidates = [
        User.id == as_id if as_id is not None else None,
        User.external_id == reference,
        User.user_name_key == folded,
        User.email_key == folded,
    ]
    for condition in candidates:
        if condition is None:
            continue
        found = session.scalar(select(User).where(condition, User.eligible).limit(1))
        if found is not None:
            return found
    return None


def manager(session: Session, user: User) -> User | None:
    """The user's manager (the enterprise ``manager``) if an eligible other person."""
    found = person(session, user.manager_id)
    return found if found is not None and found.id != user.id else None
