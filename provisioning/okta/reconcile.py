"""Reconciliation with Okta: find and repair drift in memberships and user status.

The safety net under event hooks, which Okta delivers at best once. For each
group a mapping references, the members Okta lists are compared with the
memberships we hold (missing here, or extra here); for every user we hold,
Okta's status is compared with ours (deactivated in Okta but active here, or
the reverse), and a full run also names the users Okta no longer knows
(orphaned: reported, left to the stale-access findings, never guessed at).

A run first fetches everything it compares (every group's members, then the
users' statuses) and plans the membership repairs of the whole run, then
applies them person by person: each person's additions before their removals,
in the same transaction, so that someone who moved between two groups mapping
to the same connector keeps the same live grant (its id, ``granted_at`` and
``last_used_at``) instead of losing it and being granted anew. Repairs go
through the people lifecycle with source ``okta-sync``, set-wise, one
transaction and one engine run per batch of whole people (:func:`apply_repairs`,
which the initial import shares; status changes go per batch of users), under
one mass-revocation brake for the run. Any Okta failure while fetching stops the
run before anything is applied (a partial plan could revoke half of a move);
the next run does the work. Each repair carries the time its data was fetched
as its ``published`` time: an event Okta published after the fetch still wins.
An incremental run asks Okta only for groups whose membership changed
(``lastMembershipUpdated gt``) and users who changed (``lastUpdated gt``)
since the last successful run started. A group asked for by Okta id that no
mapping references is not reconciled but reported: ``unmapped_groups`` (Okta has
it) or ``unknown_groups`` (Okta does not know it).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning import text
from provisioning.audit.log import Origin, Source
from provisioning.database import Database, chunked, utcnow
from provisioning.entitlements import brake, engine
from provisioning.entitlements.models import Mapping
from provisioning.identity.models import Group, Membership, MembershipSource, User
from provisioning.okta import runs
from provisioning.okta.client import OktaClient, OktaError
from provisioning.okta.models import SyncRun
from provisioning.people import lifecycle
from provisioning.settings import DEFAULTS, Settings

KIND = "reconcile"
# Okta statuses in which a person may hold access (PROVISIONED: activated, password not set).
ACTIVE_STATUSES = frozenset({"ACTIVE", "PROVISIONED", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"})
USER_BATCH = 500
# Membership repairs per transaction (whole people: one person's repairs are never split).
MEMBERSHIP_BATCH = 2000
# Asked for changes since a little before the last run started: clocks and
# Okta's indexes are not exact, and looking twice at a group is harmless.
INCREMENTAL_OVERLAP = dt.timedelta(seconds=60)
# The profile attributes a person created by reconciliation is given.
PROFILE_FIELDS = ("login", "email", "firstName", "lastName", "employeeNumber", "department")
ORIGIN = Origin(actor="okta-sync", source=Source.OKTA_SYNC)

Progress = Callable[[str, int, int], None]  # (stage, done, total)

log = logging.getLogger(__name__)


def okta_time(moment: dt.datetime) -> str:
    """A time as Okta's filters take it, to the millisecond."""
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Repair:
    """One membership to add or remove, as planned from one group's fetched members."""

    okta_group: str
    group_id: Any  # ours
    present: bool
    fetched_at: dt.datetime
    member: dict[str, Any] | None = None  # Okta's record of the person, for an addition
    user_id: Any = None  # ours, for a removal


# Okta user id -> that person's repairs, for the whole run.
Plan = dict[str, list[Repair]]


def mapped_groups(session: Session, only: Iterable[str] | None) -> list[tuple[str, Any]]:
    query = (
        select(Group.external_id, Group.id)
        .join(Mapping, Mapping.group_id == Group.id)
        .where(Group.external_id.is_not(None))
        .distinct()
        .order_by(Group.external_id)
    )
    rows = [(okta_id, group_id) for okta_id, group_id in session.execute(query)]
    if only is not None:
        wanted = set(only)
        rows = [row for row in rows if row[0] in wanted]
    return rows


def reconcile(
    database: Database,
    client: OktaClient,
    *,
    dry_run: bool = False,
    full: bool = True,
    groups: Iterable[str] | None = None,
    progress: Progress | None = None,
    settings: Settings = DEFAULTS,
) -> SyncRun:
    """Run one reconciliation and return its record (also when it failed: check ``status``).

    Its brake has ``settings``' mass-revocation limits.
    """
    progress = progress or (lambda stage, done, total: None)
    previous = None if full else runs.last_success(database, KIND)
    since = previous.started_at - INCREMENTAL_OVERLAP if previous else None
    mode = "incremental" if since else "full"
    requests_before = client.requests
    try:
        with runs.recorded(database, KIND, mode=mode, dry_run=dry_run) as run:
            counts = {"groups": 0, "groups_vanished": 0, "users_checked": 0}
            drift: dict[str, list] = {
                "missing": [],
                "extra": [],
                "deactivated": [],
                "reactivated": [],
                "orphaned": [],
                "vanished_groups": [],
            }
            run.counts, run.drift = counts, drift
            with database.reader() as session:
                mapped = mapped_groups(session, groups)
            if groups is not None:
                asked = [g for g in dict.fromkeys(groups) if g not in {row[0] for row in mapped}]
                drift["unmapped_groups"], drift["unknown_groups"] = _not_mapped(client, asked)
            if since is not None:
                changed = {
                    g["id"] for g in client.groups(f'lastMembershipUpdated gt "{okta_time(since)}"')
                }
                mapped = [row for row in mapped if row[0] in changed]
            # Everything is fetched before anything is applied.
            plan: Plan = {}
            for done, (okta_group, group_id) in enumerate(mapped, 1):
                _plan_group(database, client, okta_group, group_id, counts, drift, plan)
                progress("groups", done, len(mapped))
                run.requests = client.requests - requests_before
            users_fetched_at = utcnow()
            statuses = _okta_statuses(client, since)
            run.requests = client.requests - requests_before
            if not dry_run:
                # Membership removals of the whole run count against one mass-revocation
                # brake; deactivations are leavers and are never held.
                held = brake.new(f"okta reconciliation run {run.id} ({mode})", settings)
                _apply_memberships(database, plan, held, progress)
                if held.held:
                    counts["revocations_held"] = held.held
            _reconcile_users(
                database, statuses, users_fetched_at, since, dry_run, counts, drift, progress
            )
            for name, entries in drift.items():
                counts[name] = len(entries)
    except OktaError:
        pass  # recorded as failed; the caller reads the record
    return run


def _not_mapped(client: OktaClient, okta_groups: list[str]) -> tuple[list, list]:
    """Of groups asked for by Okta id that no mapping references: those Okta has
    ([id, name]: to be mapped first), and those it does not know (ids)."""
    unmapped, unknown = [], []
    for okta_group in okta_groups:
        try:
            found = client.group(okta_group)
        except OktaError as exc:
            if exc.status != 404:
                raise
            unknown.append(okta_group)
            continue
        unmapped.append([okta_group, str((found.get("profile") or {}).get("name") or "")])
    return unmapped, unknown


@dataclass
class People:
    """What Okta's records of some people are here (:func:`classify`), by Okta id."""

    known: dict[str, Any]  # held here with their Okta id: ours
    linkable: dict[str, Any]  # held here by login, without the Okta id yet: ours
    new: dict[str, lifecycle.NewUser]  # to create
    refused: dict[str, str]  # break the text rules: why


def classify(session: Session, members: Iterable[dict[str, Any]]) -> People:
    """Okta's records of people as they stand here, set-wise; changes nothing."""
    records = {m["id"]: m for m in members}
    people = People({}, {}, {}, {})
    ids = sorted(records)
    for chunk in chunked(ids):
        people.known.update(
            session.execute(
                select(User.external_id, User.id).where(
                    User.external_id.in_(chunk), User.deleted_at.is_(None)
                )
            ).all()
        )
    logins = {text.fold(_login(records[i])): i for i in reversed(ids) if i not in people.known}
    for chunk in chunked(sorted(logins)):
        for key, user_id in session.execute(
            select(User.user_name_key, User.id).where(
                User.user_name_key.in_(chunk), User.deleted_at.is_(None)
            )
        ):
            people.linkable[logins[key]] = user_id
    for okta_id in ids:
        if okta_id in people.known or okta_id in people.linkable:
            continue
        try:
            people.new[okta_id] = _new_user(records[okta_id])
        except (text.TextError, lifecycle.IdentityError) as exc:
            people.refused[okta_id] = str(exc)
    return people


def _login(member: dict[str, Any]) -> str:
    return (member.get("profile") or {}).get("login") or member["id"]


def _new_user(member: dict[str, Any]) -> lifecycle.NewUser:
    profile = member.get("profile") or {}
    names = " ".join(p for p in (profile.get("firstName"), profile.get("lastName")) if p)
    return lifecycle.new_user(
        user_name=_login(member),
        external_id=member["id"],
        email=profile.get("email"),
        given_name=profile.get("firstName"),
        family_name=profile.get("lastName"),
        display_name=names or None,
        employee_number=profile.get("employeeNumber"),
        department=profile.get("department"),
        active=(member.get("status") or "ACTIVE") in ACTIVE_STATUSES,
    )


def people_for(
    session: Session, members: Iterable[dict[str, Any]], counts: dict[str, int] | None = None
) -> dict[str, Any]:
    """Okta id -> our user id for Okta's records of people: found by Okta id, else by
    login (then given the Okta id), else created set-wise. Whoever breaks the text rules
    or whose login another Okta id took is left out (logged; nothing written for them)."""
    counts = counts if counts is not None else {}
    people = classify(session, members)
    ids = dict(people.known)
    for okta_id, user_id in people.linkable.items():
        lifecycle.update_user(session, ORIGIN, session.get(User, user_id), external_id=okta_id)
        ids[okta_id] = user_id
    new = list(people.new.items())
    for (okta_id, _), added in zip(
        new, lifecycle.add_users(session, ORIGIN, [n for _, n in new]), strict=True
    ):
        if isinstance(added, lifecycle.IdentityError):
            people.refused[okta_id] = str(added)
        else:
            ids[okta_id] = added
            counts["people_created"] = counts.get("people_created", 0) + 1
    for okta_id, why in people.refused.items():
        # No user is made of it, so no access is added (removals still apply).
        log.warning("okta user %s not added: %s", okta_id, why)
    counts["people_linked"] = counts.get("people_linked", 0) + len(people.linkable)
    counts["people_refused"] = counts.get("people_refused", 0) + len(people.refused)
    return ids


def apply_repairs(
    session: Session, repairs: list[Repair], counts: dict[str, int] | None = None
) -> engine.Diff:
    """Apply membership repairs set-wise, in order, creating the people to add as needed:
    one audit event per change, the engine run once for them all. ``counts`` gains the
    people created, linked and refused and the memberships changed. What the engine did."""
    counts = counts if counts is not None else {}
    ids = people_for(session, [r.member for r in repairs if r.present], counts)
    groups = {
        g.id: g
        for g in session.scalars(select(Group).where(Group.id.in_({r.group_id for r in repairs})))
    }
    facts = []
    for repair in repairs:
        user_id = ids.get(repair.member["id"]) if repair.present else repair.user_id
        group = groups.get(repair.group_id)
        if user_id is None or group is None:
            continue  # refused, or the group was deleted here since it was fetched
        facts.append(
            lifecycle.MembershipFact(
                user_id,
                group,
                repair.present,
                MembershipSource.OKTA_SYNC,
                repair.fetched_at,
                reason=f"reconciliation of {repair.okta_group}",
            )
        )
    changed, diff = lifecycle.set_memberships(session, ORIGIN, facts)
    counts["memberships_changed"] = counts.get("memberships_changed", 0) + changed
    return diff or engine.Diff()


def _plan_group(
    database: Database,
    client: OktaClient,
    okta_group: str,
    group_id: Any,
    counts: dict[str, int],
    drift: dict[str, list],
    plan: Plan,
) -> None:
    """Fetch one group's members, compare them with ours, and add the repairs to the plan."""
    fetched_at = utcnow()
    try:
        members = members_of(client, okta_group)
    except OktaError as exc:
        if exc.status == 404:
            counts["groups_vanished"] += 1
            drift["vanished_groups"].append(okta_group)
            return
        raise
    counts["groups"] += 1
    with database.reader() as session:
        plan_members(session, okta_group, group_id, members, fetched_at, drift, plan)


def members_of(client: OktaClient, okta_group: str) -> dict[str, dict[str, Any]]:
    """Okta id -> Okta's record, of every member Okta lists for the group."""
    return {m["id"]: m for m in client.group_members(okta_group) if m.get("id")}


def plan_members(
    session: Session,
    okta_group: str,
    group_id: Any,
    members: dict[str, dict[str, Any]],
    fetched_at: dt.datetime,
    drift: dict[str, list],
    plan: Plan,
) -> None:
    """Compare a group's fetched members with ours; add the repairs to the plan."""
    held = dict(
        session.execute(
            select(User.external_id, User.id)
            .join(Membership, Membership.user_id == User.id)
            .where(
                Membership.group_id == group_id,
                Membership.present.is_(True),
                User.external_id.is_not(None),
            )
        ).all()
    )
    missing = sorted(set(members) - set(held))
    extra = sorted(set(held) - set(members))
    drift["missing"] += [[okta_group, u] for u in missing]
    drift["extra"] += [[okta_group, u] for u in extra]
    for okta_user in missing:
        repairs = plan.setdefault(okta_user, [])
        # One record per person, however many groups they are missing from.
        member = next((r.member for r in repairs if r.member), None) or kept(members[okta_user])
        repairs.append(Repair(okta_group, group_id, True, fetched_at, member=member))
    for okta_user in extra:
        plan.setdefault(okta_user, []).append(
            Repair(okta_group, group_id, False, fetched_at, user_id=held[okta_user])
        )


def kept(member: dict[str, Any]) -> dict[str, Any]:
    """What :func:`classify` reads of Okta's record of a person (a plan holds many)."""
    profile = member.get("profile") or {}
    return {
        "id": member["id"],
        "status": member.get("status"),
        "profile": {name: profile.get(name) for name in PROFILE_FIELDS},
    }


def _apply_memberships(
    database: Database, plan: Plan, run_brake: brake.Brake, progress: Progress
) -> None:
    """Apply the run's membership repairs in batches of whole people, each person's
    additions first: the engine never sees a mover without the group that keeps
    their access, so a grant still justified is never revoked."""
    total = sum(len(repairs) for repairs in plan.values())
    done = 0
    for batch in _batches(plan):
        with database.transaction() as session, brake.applied(session, run_brake):
            apply_repairs(session, [r for repairs in batch for r in repairs])
        done += sum(len(repairs) for repairs in batch)
        progress("memberships", done, total)


def _batches(plan: Plan) -> Iterator[list[list[Repair]]]:
    """People's repairs, additions first, in batches of about MEMBERSHIP_BATCH repairs."""
    batch: list[list[Repair]] = []
    size = 0
    for okta_user in sorted(plan):
        repairs = sorted(plan[okta_user], key=lambda r: (not r.present, r.okta_group))
        if batch and size + len(repairs) > MEMBERSHIP_BATCH:
            yield batch
            batch, size = [], 0
        batch.append(repairs)
        size += len(repairs)
    if batch:
        yield batch


def repair(session: Session, plan: Plan) -> engine.Diff:
    """Apply a whole plan in this transaction, each person's additions first (set-wise:
    :func:`apply_repairs`); what the engine did (mapping an Okta group brings its members in
    so, in the mapping's transaction: :mod:`provisioning.okta.groups`)."""
    return apply_repairs(
        session, [r for batch in _batches(plan) for repairs in batch for r in repairs]
    )


def _okta_statuses(client: OktaClient, since: dt.datetime | None) -> dict[str, Any]:
    """Okta id -> status of the users Okta lists (changed since ``since``; all when None)."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return {
        u["id"]: u.get("status")
        for u in client.users(f'lastUpdated gt "{okta_time(since or epoch)}"')
        if u.get("id")
    }


def _reconcile_users(
    database: Database,
    okta_status: dict[str, Any],
    fetched_at: dt.datetime,
    since: dt.datetime | None,
    dry_run: bool,
    counts: dict[str, int],
    drift: dict[str, list],
    progress: Progress,
) -> None:
    with database.reader() as session:
        ours = session.execute(
            select(User.id, User.external_id, User.active).where(
                User.external_id.is_not(None), User.deleted_at.is_(None)
            )
        ).all()
    changes: list[tuple[Any, bool]] = []
    for user_id, okta_id, active in ours:
        counts["users_checked"] += 1
        status = okta_status.get(okta_id)
        if status is None:
            if since is None:
                drift["orphaned"].append(okta_id)
            continue
        should = status in ACTIVE_STATUSES
        if should != active:
            drift["reactivated" if should else "deactivated"].append(okta_id)
            changes.append((user_id, should))
    if dry_run:
        return
    done = 0
    for chunk in chunked(changes, USER_BATCH):
        with database.transaction() as session:
            for user_id, should in chunk:
                user = session.get(User, user_id)
                lifecycle.set_active(session, ORIGIN, user, should, published_at=fetched_at)
        done += len(chunk)
        progress("users", done, len(changes))
