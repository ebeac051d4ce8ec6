"""The entitlement engine: desired grants from committed facts, diffed with live grants, applied.

Every path that changes an input of access (SCIM, event hooks, reconciliation,
admin edits, offboarding, expiry) calls :func:`apply` with the users it
affected. The engine recomputes those users' access from scratch::

    desired(user, connector) = eligible user
                               x (present memberships x live mappings  |  live exceptions)
                                 less the sources an access review withdrew
                               x connector that is enabled and passes governance

at the highest access level any source grants (capped at the connector's
capability), diffs that with the user's live grants, and applies the
difference set-wise with one audit event per change. Running it twice
changes nothing the second time. A run that leaves one of its people breaking a
separation-of-duties rule not yet said (a grant created, a level raised, or a source
widening a held grant's actions: IdP memberships, or a confirmed mapping change) is
audited as such, its finding opened; a finding of its people whose violation went is
resolved (:func:`separation.settle`).

What counts as a source, and when one is withdrawn by an access review, is
stated once in :mod:`provisioning.entitlements.sources`; what may be granted,
in :mod:`provisioning.connectors.governance`; who may hold access, in
:attr:`provisioning.identity.models.User.eligible`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, Select, insert, or_, select, update
from sqlalchemy.orm import Session

from provisioning.audit import log as audit
from provisioning.connectors.governance import grantable
from provisioning.connectors.models import AccessLevel, Connector
from provisioning.database import chunked, utcnow
from provisioning.delivery import outbox
from provisioning.entitlements import brake, counts, separation
from provisioning.entitlements.models import Grant
from provisioning.entitlements.sources import SOURCES, Source, union, withdrawn
from provisioning.identity.models import Membership, User, UserState

# Users per engine run when many are affected: memory stays bounded at a million grants.
_ALL_USERS_BATCH = 5000


# -- which users a change affects ------------------------------------------


@dataclass(frozen=True)
class Affected:
    """The users whose access a change may alter."""

    kind: str
    ids: tuple[Any, ...] = ()

    @classmethod
    def everyone(cls) -> Affected:
        return cls("all")

    @classmethod
    def users(cls, *user_ids: uuid.UUID) -> Affected:
        return cls("users", tuple(user_ids))

    @classmethod
    def group(cls, group_id: uuid.UUID) -> Affected:
        """Everyone with a membership row in the group, present or removed."""
        return cls("group", (group_id,))

    @classmethod
    def connector(cls, connector_id: int) -> Affected:
        """Everyone who holds, or could be entitled to, the connector."""
        return cls("connector", (connector_id,))

    def condition(self, user_id: Any) -> ColumnElement[bool] | None:
        """SQL condition restricting ``user_id`` to the affected users (None: all)."""
        if self.kind == "all":
            return None
        if self.kind == "users":
            return user_id.in_(self.ids)
        if self.kind == "group":
            return user_id.in_(select(Membership.user_id).where(Membership.group_id == self.ids[0]))
        if self.kind == "connector":
            connector_id = self.ids[0]
            return or_(
                user_id.in_(
                    select(Grant.user_id).where(
                        Grant.connector_id == connector_id, Grant.revoked_at.is_(None)
                    )
                ),
                *(
                    user_id.in_(
                        source.select(source.user_id).where(source.connector_id == connector_id)
                    )
                    for source in SOURCES
                ),
            )
        raise ValueError(f"unknown scope {self.kind!r}")


# -- the rule ---------------------------------------------------------------


def justifications(affected: Affected, *, connector_id: int | None = None) -> Any:
    """Every (user, connector, level, capability, reason) that justifies access now.

    One row per live source (:mod:`provisioning.entitlements.sources`) of an
    eligible user's access to a grantable connector: ``via`` is the kind of
    source (``mapping``, ``exception``) and ``ref`` its id.
    """
    now = utcnow()

    def build(source: Source) -> Select:
        statement = (
            source.select(
                source.user_id.label("user_id"),
                source.connector_id.label("connector_id"),
                source.access_level.label("access_level"),
                Connector.capability,
                source.label,
                source.ref.label("ref"),
                now=now,
            )
            .join(User, User.id == source.user_id)
            .join(Connector, Connector.id == source.connector_id)
            .where(User.eligible, grantable())
        )
        if (only := affected.condition(source.user_id)) is not None:
            statement = statement.where(only)
        if connector_id is not None:
            statement = statement.where(source.connector_id == connector_id)
        return statement

    return union(build)


# -- the diff ---------------------------------------------------------------


@dataclass(frozen=True)
class GrantChange:
    """One grant created, revoked or changed in level."""

    user_id: uuid.UUID
    connector_id: int
    access_level: AccessLevel
    grant_id: int | None = None
    previous_level: AccessLevel | None = None
    reasons: tuple[str, ...] = ()
    revoke_reason: str | None = None


@dataclass
class Diff:
    """What a run of the engine changed (or, for a plan, would change)."""

    created: list[GrantChange] = field(default_factory=list)
    revoked: list[GrantChange] = field(default_factory=list)
    updated: list[GrantChange] = field(default_factory=list)
    # The outbox messages written to tell downstream targets (their ids).
    messages: list[int] = field(default_factory=list)
    # Revocations the mass-revocation brake held back, and the hold keeping them.
    held: list[GrantChange] = field(default_factory=list)
    hold_id: int | None = None
    # The separation-of-duties violations a mapping change began (filled by the change:
    # :mod:`provisioning.entitlements.mappings`).
    violations: list[separation.Violation] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.created or self.revoked or self.updated)

    def extend(self, other: Diff) -> None:
        self.created += other.created
        self.revoked += other.revoked
        self.updated += other.updated
        self.messages += other.messages
        self.held += other.held
        self.violations += other.violations
        self.hold_id = self.hold_id or other.hold_id

    def summary(self) -> dict[str, int]:
        return {
            "created": len(self.created),
            "revoked": len(self.revoked),
            "updated": len(self.updated),
        }


UNJUSTIFIED = "no mapping or exception justifies it"
WITHDRAWN = "access withdrawn by a review or dormant-access remediation"


_INELIGIBLE = {
    UserState.DELETED: "user deleted",
    UserState.OFFBOARDED: "user offboarded",
    UserState.DEACTIVATED: "user deactivated",
}


def _revoke_reason(row: Any) -> str:
    if (reason := _INELIGIBLE.get(UserState(row.state))) is not None:
        return reason
    if not row.enabled:
        return "connector disabled"
    if not row.grantable:
        return "connector fails governance"
    return UNJUSTIFIED


def _plan_batch(
    session: Session, affected: Affected, watched: separation.Watch | None = None
) -> Diff:
    desired: dict[tuple[uuid.UUID, int], tuple[AccessLevel, list[str]]] = {}
    for row in session.execute(justifications(affected)):
        key = (row.user_id, row.connector_id)
        level = min(AccessLevel(row.access_level), AccessLevel(row.capability), key=_rank)
        reason = f"{row.via}:{row.ref}"
        held = desired.get(key)
        if held is None:
            desired[key] = (level, [reason])
        else:
            held[1].append(reason)
            if _rank(level) > _rank(held[0]):
                desired[key] = (level, held[1])

    live = (
        select(
            Grant.id,
            Grant.user_id,
            Grant.connector_id,
            Grant.access_level,
            User.state.label("state"),
            Connector.enabled,
            grantable().label("grantable"),
        )
        .join(User, User.id == Grant.user_id)
        .join(Connector, Connector.id == Grant.connector_id)
        .where(Grant.revoked_at.is_(None))
    )
    if (only := affected.condition(Grant.user_id)) is not None:
        live = live.where(only)

    diff = Diff()
    holds: dict[uuid.UUID, set[int]] = defaultdict(set)
    for user_id, connector_id in desired if watched is not None else ():
        holds[user_id].add(connector_id)
    for row in session.execute(live):
        key = (row.user_id, row.connector_id)
        if watched is not None:
            holds[row.user_id].add(row.connector_id)
        held_level = AccessLevel(row.access_level)
        wanted = desired.pop(key, None)
        if wanted is None:
            diff.revoked.append(
                GrantChange(
                    row.user_id,
                    row.connector_id,
                    held_level,
                    grant_id=row.id,
                    revoke_reason=_revoke_reason(row),
                )
            )
        elif wanted[0] != held_level:
            diff.updated.append(
                GrantChange(
                    row.user_id,
                    row.connector_id,
                    wanted[0],
                    grant_id=row.id,
                    previous_level=held_level,
                    reasons=tuple(sorted(wanted[1])),
                )
            )
    for (user_id, connector_id), (level, reasons) in desired.items():
        diff.created.append(
            GrantChange(user_id, connector_id, level, reasons=tuple(sorted(reasons)))
        )
    _name_withdrawals(session, diff)
    if watched is not None:
        for user_id, connectors in holds.items():
            watched.note(user_id, connectors)
    return diff


def _name_withdrawals(session: Session, diff: Diff) -> None:
    """A revocation because an access review withdrew the grant's sources says so: the
    grant is older than a review revocation of its user and connector."""
    unjustified = [c.grant_id for c in diff.revoked if c.revoke_reason == UNJUSTIFIED]
    reviewed: set[int] = set()
    for chunk in chunked(unjustified):
        reviewed.update(
            session.scalars(
                select(Grant.id).where(
                    Grant.id.in_(chunk),
                    withdrawn(Grant.user_id, Grant.connector_id, Grant.granted_at),
                )
            )
        )
    if reviewed:
        diff.revoked = [
            replace(c, revoke_reason=WITHDRAWN) if c.grant_id in reviewed else c
            for c in diff.revoked
        ]


def _rank(level: AccessLevel) -> int:
    return level.rank


def _batches(session: Session, affected: Affected) -> Iterator[Affected]:
    """Split "everyone" into id ranges so memory stays bounded at a million grants."""
    if affected.kind != "all":
        yield affected
        return
    yield from in_batches(session.scalars(select(User.id).order_by(User.id)).all())


def in_batches(user_ids: Sequence[uuid.UUID]) -> Iterator[Affected]:
    """Many users as the engine runs them, a bounded batch at a time."""
    for chunk in chunked(user_ids, _ALL_USERS_BATCH):
        yield Affected.users(*chunk)


def plan(session: Session, affected: Affected, watched: separation.Watch | None = None) -> Diff:
    """What :func:`apply` would change for ``affected`` now, changing nothing (noting in
    ``watched`` who of them holds, before or after, connectors of a rule's two sides)."""
    diff = Diff()
    for batch in _batches(session, affected):
        diff.extend(_plan_batch(session, batch, watched))
    return diff


# A Core statement on the session's connection: the ORM's bulk insert costs more than it.
_GRANTS = Grant.__table__
_INSERT_GRANTS = insert(_GRANTS).returning(_GRANTS.c.id, _GRANTS.c.user_id, _GRANTS.c.connector_id)


def apply(session: Session, affected: Affected, origin: audit.Origin) -> Diff:
    """Bring the affected users' live grants to what the facts justify, in this transaction.

    Takes the audit chain head first, so concurrent runs are serialised and
    each computes its diff from the state the previous one committed. When a
    mass-revocation brake is engaged on the session and the revocations are
    too many, they are held back (:mod:`provisioning.entitlements.brake`).
    """
    audit.lock(session)
    session.flush()
    watched = separation.watch(session)
    diff = plan(session, affected, watched)
    if diff:
        hold_id = brake.review(session, origin, diff.revoked)
        if hold_id is not None:
            diff.held, diff.revoked, diff.hold_id = diff.revoked, [], hold_id
    if diff:
        _change(session, origin, diff)
    if watched is not None and watched.candidates:
        _say_violations(session, origin, watched, diff)
    return diff


def _change(session: Session, origin: audit.Origin, diff: Diff) -> None:
    """Write ``diff``: grants, their audit events, the day's counts, the outbox."""
    now = utcnow()
    slugs = {cid: slug for cid, slug in session.execute(select(Connector.id, Connector.slug))}
    entries: list[audit.Entry] = []

    grant_ids: dict[tuple[uuid.UUID, int], int] = {}
    for chunk in chunked(diff.created):
        # Matched back by (user, connector) rather than by row order, so that
        # SQLite can batch the insert too.
        inserted = session.connection().execute(
            _INSERT_GRANTS,
            [
                {
                    "user_id": c.user_id,
                    "connector_id": c.connector_id,
                    "access_level": c.access_level,
                    "granted_at": now,
                }
                for c in chunk
            ],
        )
        grant_ids.update(((user_id, connector_id), id_) for id_, user_id, connector_id in inserted)
    diff.created = [_with_id(c, grant_ids[(c.user_id, c.connector_id)]) for c in diff.created]
    for c in diff.created:
        entries.append(_entry("grant.created", c, after=_state(c, slugs)))

    by_reason: dict[str, list[GrantChange]] = defaultdict(list)
    for c in diff.revoked:
        by_reason[c.revoke_reason or ""].append(c)
    for reason, changes in by_reason.items():
        for chunk in chunked(changes):
            session.execute(
                update(Grant)
                .where(Grant.id.in_([c.grant_id for c in chunk]), Grant.revoked_at.is_(None))
                .values(revoked_at=now, revoke_reason=reason)
            )
    for c in diff.revoked:
        entries.append(_entry("grant.revoked", c, before=_state(c, slugs), reason=c.revoke_reason))

    by_level: dict[AccessLevel, list[GrantChange]] = defaultdict(list)
    for c in diff.updated:
        by_level[c.access_level].append(c)
    for level, changes in by_level.items():
        for chunk in chunked(changes):
            session.execute(
                update(Grant)
                .where(Grant.id.in_([c.grant_id for c in chunk]))
                .values(access_level=level)
            )
    for c in diff.updated:
        before = {**_state(c, slugs), "access_level": str(c.previous_level)}
        entries.append(_entry("grant.updated", c, before=before, after=_state(c, slugs)))

    counts.add(session, now.date(), granted=len(diff.created), revoked=len(diff.revoked))
    audit.record(session, origin, entries)
    diff.messages = outbox.enqueue(session, _events(diff, slugs))


def _say_violations(
    session: Session, origin: audit.Origin, watched: separation.Watch, diff: Diff
) -> None:
    """Each separation-of-duties violation the run began, said aloud: a new grant, a level
    raised, or a source that widened the actions of a grant held already. One
    ``separation.violated`` per person and rule (naming the connector of the rule this run
    changed for them, else one of it they hold), and its finding opened
    (:func:`separation.settle`)."""
    onsets = separation.settle(session, watched)
    if not onsets:
        return
    slugs = {cid: slug for cid, slug in session.execute(select(Connector.id, Connector.slug))}
    changed: dict[uuid.UUID, set[int]] = defaultdict(set)
    for c in (*diff.created, *diff.updated):
        changed[c.user_id].add(c.connector_id)
    held: dict[uuid.UUID, set[int]] = defaultdict(set)
    users = sorted({o.user_id for o in onsets})
    for chunk in chunked(users):
        rows = session.execute(
            select(Grant.user_id, Grant.connector_id).where(
                Grant.user_id.in_(chunk), Grant.revoked_at.is_(None)
            )
        )
        for user_id, connector_id in rows:
            held[user_id].add(connector_id)
    entries = []
    for onset in onsets:
        these, those = watched.sides[onset.rule.id]
        on_rule = these | those
        connector = min(changed[onset.user_id] & on_rule, default=None)
        if connector is None:
            connector = min(held[onset.user_id] & on_rule, default=None)
        entries.append(
            audit.Entry(
                action="separation.violated",
                subject_type="separation_rule",
                subject_id=str(onset.rule.id),
                user_id=onset.user_id,
                reason=str(onset),
                after={"rule": onset.rule.name, "connector": slugs.get(connector)},
            )
        )
    audit.record(session, origin, entries)


def _events(diff: Diff, slugs: dict[int, str]) -> Iterator[outbox.Event]:
    """The outbox events of a diff (invariant 3: same transaction as the change)."""
    for kind, changes in (
        ("grant.created", diff.created),
        ("grant.updated", diff.updated),
        ("grant.revoked", diff.revoked),
    ):
        for c in changes:
            grant: dict[str, Any] = {
                "id": c.grant_id,
                "connector": slugs[c.connector_id],
                "connector_id": c.connector_id,
                "access_level": str(c.access_level),
            }
            if c.previous_level is not None:
                grant["previous_level"] = str(c.previous_level)
            if c.revoke_reason is not None:
                grant["reason"] = c.revoke_reason
            yield outbox.Event(kind, c.user_id, {"grant": grant}, c.connector_id)


def _with_id(change: GrantChange, grant_id: int) -> GrantChange:
    return GrantChange(
        change.user_id,
        change.connector_id,
        change.access_level,
        grant_id=grant_id,
        reasons=change.reasons,
    )


def _state(change: GrantChange, slugs: dict[int, str]) -> dict[str, Any]:
    state: dict[str, Any] = {
        "user_id": str(change.user_id),
        "connector": slugs[change.connector_id],
        "access_level": str(change.access_level),
    }
    if change.reasons:
        state["reasons"] = list(change.reasons)
    return state


def _entry(action: str, change: GrantChange, **fields: Any) -> audit.Entry:
    return audit.Entry(
        action=action,
        subject_type="grant",
        subject_id=str(change.grant_id),
        user_id=change.user_id,
        **fields,
    )


def explain(session: Session, user_id: uuid.UUID, connector_id: int) -> list[str]:
    """Why the user holds (or would hold) the connector: ``mapping:ID`` / ``exception:ID``."""
    rows = session.execute(justifications(Affected.users(user_id), connector_id=connector_id))
    return sorted(f"{row.via}:{row.ref}" for row in rows)
