"""The initial import from Okta (``provisioning okta import``): people and groups, resumable.

Which groups: those mappings reference (by default), or every Okta group matching a
search expression, or all of them (created here, with their Okta ids, when new; a group
pushed over SCIM without an Okta id is adopted by its name, as mapping by Okta id does:
:func:`provisioning.people.lifecycle.adopt_group`). Each
group's members are fetched page by page and applied in batches of about :data:`BATCH`
members by the path reconciliation repairs with
(:func:`provisioning.okta.reconcile.apply_repairs`): people created set-wise (or given
their Okta id when held by login), memberships added, one audit event per change, the
engine run once per batch.

Each batch commits with the checkpoint of the groups it covers (``okta_import_groups``:
the cursor of each group's next page, done or not), so an interruption (an Okta
failure, a crash) leaves a consistent state, and the next import resumes the open one
where it stopped: no committed page is fetched again, and nothing is created twice.
On an Okta failure the pages already fetched are applied first. An import only adds;
removing what Okta no longer lists is reconciliation's work. Rate limits are the
client's (:mod:`provisioning.okta.client`), as for reconciliation. As the tables grow,
the database's planner statistics are refreshed (after the first batch, then at each
four-fold growth), so that a batch's reads stay proportional to the batch.

A dry run fetches the same pages, writes nothing (not even a run record), and says
what it would create.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from queue import Full, Queue
from typing import Any, TypeVar

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from provisioning import text
from provisioning.database import Database, chunked, utcnow
from provisioning.identity.models import Group, Membership
from provisioning.okta import reconcile, runs
from provisioning.okta.client import OktaClient, OktaError
from provisioning.okta.models import ImportGroup
from provisioning.people import lifecycle

KIND = "import"
# Members per transaction (whole pages): one engine run, one checkpoint commit.
BATCH = 2000
# The planner's statistics are brought up to date after the first batch, then each time
# the batches applied grow this many times (Database.analyze): an import fills tables.
ANALYZE_GROWTH = 4
# Pages fetched ahead of the batch being written (one request in flight at a time).
AHEAD = 8
T = TypeVar("T")
COUNTS = (
    "groups",
    "groups_created",
    "groups_adopted",
    "groups_done",
    "pages",
    "people_created",
    "people_linked",
    "people_refused",
    "memberships_changed",
)

_CHECKPOINT = (
    update(ImportGroup.__table__)
    .where(
        ImportGroup.__table__.c.import_id == bindparam("of_import"),
        ImportGroup.__table__.c.okta_group_id == bindparam("okta_group"),
    )
    .values(
        after=bindparam("next_after"),
        pages=ImportGroup.__table__.c.pages + bindparam("new_pages"),
        done=bindparam("is_done"),
    )
)


@dataclass
class Summary:
    """What an import did (or, dry, would do)."""

    dry_run: bool
    mode: str  # mapped | all | search | resume
    import_id: int | None = None
    run_id: int | None = None
    status: str = "succeeded"
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    seconds: float = 0.0


@dataclass
class _Page:
    okta_group: str
    group_id: Any  # ours; None in a dry run for a group not held here yet
    members: list[dict[str, Any]]
    after: str | None  # the cursor of the group's next page; None: the group is done
    fetched_at: Any = None


def open_import(database: Database) -> int | None:
    """The import an interruption left unfinished (the latest), if any."""
    with database.reader() as session:
        return session.scalar(
            select(ImportGroup.import_id)
            .where(ImportGroup.done.is_(False))
            .order_by(ImportGroup.import_id.desc())
            .limit(1)
        )


def import_directory(
    database: Database,
    client: OktaClient,
    *,
    search: str | None = None,
    all_groups: bool = False,
    dry_run: bool = False,
    batch: int = BATCH,
    progress: reconcile.Progress | None = None,
) -> Summary:
    """Import (or resume the open import of) the groups selected and their members.

    ``search``: the Okta groups matching this search expression (Okta's ``search``
    parameter, e.g. ``profile.name sw "Eng"``); ``all_groups``: every Okta group;
    neither: the groups mappings reference. An open import is resumed whatever is asked.
    """
    progress = progress or (lambda stage, done, total: None)
    started, requests_before = time.perf_counter(), client.requests
    resuming = open_import(database)
    mode = "resume" if resuming else "all" if all_groups else "search" if search else "mapped"
    summary = Summary(dry_run=dry_run, mode=mode, import_id=resuming)
    counts = summary.counts
    counts.update(dict.fromkeys(COUNTS, 0))
    try:
        if dry_run:
            _preview(database, client, summary, search, all_groups, batch, progress)
        else:
            with runs.recorded(database, KIND, mode=mode) as run:
                run.counts, summary.run_id = counts, run.id
                if resuming is None:
                    summary.import_id = _begin(database, client, run.id, search, all_groups, counts)
                counts["import_id"] = summary.import_id
                analyzed_at = 1
                fetched = _fetched(database, client, summary.import_id, batch, progress)
                for applied, pages in enumerate(fetched, 1):
                    _apply(database, summary.import_id, pages, counts)
                    run.requests = client.requests - requests_before
                    if applied == analyzed_at:  # the tables grew four-fold since
                        database.analyze()
                        analyzed_at *= ANALYZE_GROWTH
                run.requests = client.requests - requests_before
    except OktaError as exc:
        summary.status, summary.error = "failed", str(exc)
    summary.requests = client.requests - requests_before
    summary.seconds = time.perf_counter() - started
    return summary


# -- which groups ------------------------------------------------------------------


def _selected(
    client: OktaClient, search: str | None, all_groups: bool
) -> list[dict[str, Any]] | None:
    """Okta's records of the groups asked for; None for the groups mappings reference."""
    if not (search or all_groups):
        return None
    return [g for g in client.groups(search=search) if g.get("id")]


def _held(session: Session, okta_ids: list[str]) -> dict[str, Any]:
    """Okta group id -> ours, for the groups held here."""
    held: dict[str, Any] = {}
    for chunk in chunked(okta_ids):
        held.update(
            session.execute(
                select(Group.external_id, Group.id).where(Group.external_id.in_(chunk))
            ).all()
        )
    return held


def _any_unclaimed(session: Session) -> bool:
    """Whether a group is held without an IdP id (pushed over SCIM without ``externalId``):
    only then may an Okta group new here be one of them, adopted by its name."""
    return session.scalar(select(Group.id).where(Group.external_id.is_(None)).limit(1)) is not None


def _unheld(session: Session, listed: list[dict[str, Any]], held: dict[str, Any]) -> dict:
    """For the dry run: Okta group id -> the group its import would adopt by name (None:
    one it would create), for the groups listed and not held, as :func:`_begin` goes."""
    taken: set[Any] = set()
    by_name = _any_unclaimed(session)
    unheld: dict[str, Any] = {}
    for okta_group in listed:
        if okta_group["id"] in held or okta_group["id"] in unheld:
            continue
        name = (okta_group.get("profile") or {}).get("name") or okta_group["id"]
        group = lifecycle.unclaimed_group(session, name, taken) if by_name else None
        unheld[okta_group["id"]] = group.id if group else None
        taken |= {group.id} if group else set()
    return unheld


def _begin(
    database: Database,
    client: OktaClient,
    import_id: int,
    search: str | None,
    all_groups: bool,
    counts: dict[str, int],
) -> int:
    """Record the groups of a new import (creating those not held here): its checkpoints."""
    listed = _selected(client, search, all_groups)
    with database.transaction() as session:
        if listed is None:
            groups = reconcile.mapped_groups(session, None)
        else:
            held = _held(session, [g["id"] for g in listed])
            by_name = _any_unclaimed(session)
            groups = []
            for okta_group in listed:
                okta_id = okta_group["id"]
                if okta_id not in held:
                    name = (okta_group.get("profile") or {}).get("name") or okta_id
                    try:
                        text.key(name, "displayName")
                    except text.TextError as exc:
                        reconcile.log.warning("okta group %s not added: %s", okta_id, exc)
                        counts["groups_refused"] = counts.get("groups_refused", 0) + 1
                        continue
                    group, adopted = lifecycle.adopt_group(
                        session,
                        reconcile.ORIGIN,
                        display_name=name,
                        external_id=okta_id,
                        by_name=by_name,
                    )
                    held[okta_id] = group.id
                    made = "groups_adopted" if adopted else "groups_created"
                    counts[made] = counts.get(made, 0) + 1
                groups.append((okta_id, held[okta_id]))
        session.add_all(
            ImportGroup(import_id=import_id, okta_group_id=okta_id, group_id=group_id, pages=0)
            for okta_id, group_id in groups
        )
    counts["groups"] = len(groups)
    return import_id


# -- fetching, in batches ------------------------------------------------------------


def _fetched(
    database: Database,
    client: OktaClient,
    import_id: int | None,
    batch: int,
    progress: reconcile.Progress,
    groups: list[tuple[str, Any, str | None]] | None = None,
) -> Iterator[list[_Page]]:
    """The pages still to fetch, in batches of about ``batch`` members, from each group's
    checkpoint (or the first page of ``groups``). On an Okta failure the batch fetched so
    far comes out first, then the failure."""
    if groups is None:
        with database.reader() as session:
            groups = [
                (okta_id, group_id, after)
                for okta_id, group_id, after in session.execute(
                    select(ImportGroup.okta_group_id, ImportGroup.group_id, ImportGroup.after)
                    .where(ImportGroup.import_id == import_id, ImportGroup.done.is_(False))
                    .order_by(ImportGroup.okta_group_id)
                )
            ]
    pages: list[_Page] = []
    size = 0
    try:
        for page, done in _ahead(_pages(client, groups)):
            pages.append(page)
            size += len(page.members) or 1
            if size >= batch:
                yield pages
                pages, size = [], 0
            if done:
                progress("groups", done, len(groups))
    except OktaError:
        if pages:
            yield pages
        raise
    if pages:
        yield pages


def _pages(
    client: OktaClient, groups: list[tuple[str, Any, str | None]]
) -> Iterator[tuple[_Page, int]]:
    """Each group's pages from its cursor, each with the count of groups done by it (0:
    its group has more)."""
    for done, (okta_group, group_id, after) in enumerate(groups, 1):
        try:
            for members, next_after in client.member_pages(okta_group, after):
                kept = [reconcile.kept(m) for m in members if m.get("id")]
                page = _Page(okta_group, group_id, kept, next_after, utcnow())
                yield page, done if next_after is None else 0
        except OktaError as exc:
            if exc.status != 404:
                raise
            yield _Page(okta_group, group_id, [], None), done  # gone from Okta: done


def _ahead(items: Iterator[T], depth: int = AHEAD) -> Iterator[T]:
    """``items``, produced by a thread of their own up to ``depth`` ahead: Okta's next pages
    arrive while a batch is written. What it raises is raised here, in turn."""
    queue: Queue = Queue(depth)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.2)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((True, item)):
                    return
            offer((False, None))
        except BaseException as exc:  # handed to the consumer
            offer((False, exc))

    thread = threading.Thread(target=produce, name="okta-import-fetch", daemon=True)
    thread.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _apply(database: Database, import_id: int | None, pages: list[_Page], counts: dict) -> None:
    """One batch: its members added set-wise, its groups' checkpoints moved on, together."""
    repairs = [
        reconcile.Repair(page.okta_group, page.group_id, True, page.fetched_at, member=member)
        for page in pages
        for member in page.members
    ]
    checkpoints: dict[str, dict[str, Any]] = {}
    for page in pages:
        point = checkpoints.setdefault(
            page.okta_group,
            {"of_import": import_id, "okta_group": page.okta_group, "new_pages": 0},
        )
        point["new_pages"] += 1 if page.fetched_at is not None else 0
        point["next_after"], point["is_done"] = page.after, page.after is None
    with database.transaction() as session:
        reconcile.apply_repairs(session, repairs, counts)
        session.connection().execute(_CHECKPOINT, list(checkpoints.values()))
    counts["pages"] = counts.get("pages", 0) + sum(p["new_pages"] for p in checkpoints.values())
    counts["groups_done"] = counts.get("groups_done", 0) + sum(
        p["is_done"] for p in checkpoints.values()
    )


# -- a dry run -------------------------------------------------------------------------


def _preview(
    database: Database,
    client: OktaClient,
    summary: Summary,
    search: str | None,
    all_groups: bool,
    batch: int,
    progress: reconcile.Progress,
) -> None:
    """What the import would create, from the same pages; writes nothing."""
    counts = summary.counts
    groups: list[tuple[str, Any, str | None]]
    if summary.import_id is not None:
        with database.reader() as session:
            groups = [
                tuple(row)
                for row in session.execute(
                    select(ImportGroup.okta_group_id, ImportGroup.group_id, ImportGroup.after)
                    .where(ImportGroup.import_id == summary.import_id, ImportGroup.done.is_(False))
                    .order_by(ImportGroup.okta_group_id)
                )
            ]
    else:
        listed = _selected(client, search, all_groups)
        with database.reader() as session:
            if listed is None:
                groups = [(o, g, None) for o, g in reconcile.mapped_groups(session, None)]
            else:
                held = _held(session, [g["id"] for g in listed])
                unheld = _unheld(session, listed, held)
                held |= {o: g for o, g in unheld.items() if g is not None}
                groups = [(g["id"], held.get(g["id"]), None) for g in listed]
                counts["groups_created"] = sum(g is None for g in unheld.values())
                counts["groups_adopted"] = len(unheld) - counts["groups_created"]
    counts["groups"] = len(groups)
    new_people: set[str] = set()
    for pages in _fetched(database, client, None, batch, progress, groups):
        counts["pages"] = counts.get("pages", 0) + sum(p.fetched_at is not None for p in pages)
        with database.reader() as session:
            people = reconcile.classify(session, [m for p in pages for m in p.members])
            present = _present(
                session, list(people.known.values()) + list(people.linkable.values())
            )
        ours = {**people.known, **people.linkable}
        fresh = set(people.new) - new_people
        new_people |= fresh
        counts["people_created"] = counts.get("people_created", 0) + len(fresh)
        counts["people_linked"] = counts.get("people_linked", 0) + len(people.linkable)
        counts["people_refused"] = counts.get("people_refused", 0) + len(people.refused)
        counts["memberships_changed"] = counts.get("memberships_changed", 0) + sum(
            (ours.get(m["id"]), p.group_id) not in present
            for p in pages
            for m in p.members
            if m["id"] not in people.refused
        )


def _present(session: Session, user_ids: list[Any]) -> set[tuple[Any, Any]]:
    """The (user, group) memberships present here of these users."""
    found: set[tuple[Any, Any]] = set()
    for chunk in chunked(user_ids):
        found.update(
            session.execute(
                select(Membership.user_id, Membership.group_id).where(
                    Membership.user_id.in_(chunk), Membership.present.is_(True)
                )
            ).all()
        )
    return found


def total_pages(database: Database, import_id: int) -> int:
    """The pages an import has committed, over all its runs."""
    with database.reader() as session:
        return session.scalar(
            select(func.coalesce(func.sum(ImportGroup.pages), 0)).where(
                ImportGroup.import_id == import_id
            )
        )
