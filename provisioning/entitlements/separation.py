"""Separation of duties: rules of incompatible access, exemptions, and who would break them.

A :class:`~provisioning.entitlements.models.SeparationRule` says nobody holds
any part of ``these`` together with any part of ``those``; a part is a whole
connector or one action of it (:class:`Part`). Holding an action, stated once
(:func:`covers` for a grant being given, :func:`_holders` and, per person,
:func:`_holds` in SQL): a live grant
of its connector, and a live source of that access (mapping, exception,
approved request) that lists the action (no action subset, or one naming it) at
an access level allowing its kind -- what the decision path needs to let a call
of it through, policy aside. Rules are enforced:

- **before** a deliberate grant: :func:`provisioning.entitlements.mappings.check_grant`
  (every manual exception and access request passes it) asks :func:`first_conflict`
  whether the grant gives a part of both sides, or gives a part of one side to someone
  holding a part of the other, and refuses naming the rule; a live
  :class:`~provisioning.entitlements.models.SeparationExemption` (justified, approved,
  expiring) lets that one person through;
- **around** a mapping change: who of the group's members holds each side before
  (:func:`holdings`), who breaks a rule after (:func:`begun`); the violations it begins
  refuse it unless confirmed with a reason (which exempts nobody);
- **in** every engine run: :func:`settle` finds which of the run's people began or
  stopped breaking a rule (a :class:`Watch` narrows them to holders of connectors of
  both sides), for the engine to say each onset aloud (``separation.violated``) and
  open its finding, or resolve it;
- **after** the fact: the stale-access scan reports every person holding both sides
  without a live exemption (:func:`violators`, one query per rule), a finding resolved
  when the violation goes or an exemption covers it.

Membership facts from the IdP are not refused (they are the IdP's): the engine
grants what they justify, but never silently. The decision path evaluates no rule:
nothing here runs per call.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Boolean,
    Select,
    Subquery,
    exists,
    false,
    or_,
    select,
    union,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from provisioning.audit.log import Entry, Origin, record
from provisioning.connectors.models import AccessLevel, Action, ActionKind, Connector
from provisioning.database import chunked, utcnow
from provisioning.entitlements import sources
from provisioning.entitlements.models import Grant, SeparationExemption, SeparationRule
from provisioning.identity.models import User
from provisioning.oversight import findings
from provisioning.oversight.models import FindingKind, FindingState, Severity


class lists(FunctionElement):
    """SQL: a source's ``actions`` (JSON) lists ``name``: no subset (NULL, JSON null), or
    an array holding it."""

    type = Boolean()
    inherit_cache = True
    name = "lists"


@compiles(lists)
def _lists_sqlite(element: lists, compiler: Any, **kw: Any) -> str:
    column, name = (compiler.process(c, **kw) for c in element.clauses)
    return (
        f"({column} IS NULL OR json_type({column}) != 'array' OR EXISTS "
        f"(SELECT 1 FROM json_each({column}) WHERE json_each.value = {name}))"
    )


@compiles(lists, "postgresql")
def _lists_postgresql(element: lists, compiler: Any, **kw: Any) -> str:
    column, name = (compiler.process(c, **kw) for c in element.clauses)
    return (
        f"({column} IS NULL OR json_typeof({column}) != 'array' OR "
        f"CAST({column} AS JSONB) @> jsonb_build_array(CAST({name} AS TEXT)))"
    )


class SeparationError(ValueError):
    """A rule or exemption that cannot be made as asked; nothing was changed."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Conflict:
    """Granting ``connector_id`` to ``user_id`` would break the rule ``rule_id``."""

    rule_id: int
    rule: str
    reason: str
    user_id: uuid.UUID
    connector_id: int

    def __str__(self) -> str:
        return (
            f"separation of duties: rule {self.rule!r} ({self.reason}) forbids user "
            f"{self.user_id} this connector with one they hold; an exemption may allow it"
        )


def _exempt(rule_id: Any, user_id: Any, now: dt.datetime) -> Any:
    return (
        exists()
        .where(
            SeparationExemption.rule_id == rule_id,
            SeparationExemption.user_id == user_id,
            SeparationExemption.expires_at > now,
        )
        .correlate_except(SeparationExemption)
    )


@dataclass(frozen=True)
class Part:
    """One entry of a rule's side: a whole connector, or one action of it (by name)."""

    connector_id: int
    action: str | None = None

    @property
    def stored(self) -> int | list[Any]:
        """As the rule's JSON keeps it: the connector's id, or ``[id, action]``."""
        return self.connector_id if self.action is None else [self.connector_id, self.action]


def parts(side: list[Any]) -> list[Part]:
    """A rule's stored side as its parts."""
    return [Part(e) if isinstance(e, int) else Part(int(e[0]), str(e[1])) for e in side]


Kinds = dict[tuple[int, str], ActionKind]


def _kinds(session: Session, rules: Iterable[SeparationRule]) -> Kinds:
    """The kind of every action the rules name (one query); a vanished one is absent."""
    named = {
        (p.connector_id, p.action)
        for rule in rules
        for p in parts(rule.these) + parts(rule.those)
        if p.action is not None
    }
    if not named:
        return {}
    rows = session.execute(
        select(Action.connector_id, Action.name, Action.kind).where(
            Action.connector_id.in_({c for c, _ in named}), Action.name.in_({a for _, a in named})
        )
    )
    return {(c, a): kind for c, a, kind in rows if (c, a) in named}


def _levels(kind: ActionKind) -> list[AccessLevel]:
    return [level for level in AccessLevel if level.allows(kind)]


def covers(
    part: Part, connector_id: int, level: AccessLevel, actions: Iterable[str] | None, kinds: Kinds
) -> bool:
    """Whether a source of ``connector_id`` at ``level`` listing ``actions`` (None: all)
    gives ``part``: the rule of holding an action, in Python (:func:`_holders` in SQL)."""
    if part.connector_id != connector_id:
        return False
    if part.action is None:
        return True
    kind = kinds.get((connector_id, part.action))
    return (
        kind is not None and level.allows(kind) and (actions is None or part.action in set(actions))
    )


def _covered(part: Part, kinds: Kinds, now: dt.datetime, user_id: Any) -> Any:
    """SQL condition: a live source of ``user_id``'s access to the connector of ``part`` (an
    action) covers it, i.e. lists it (no action subset, or one naming it) at an access level
    allowing its kind -- what the decision path needs to allow a call of it (policy aside).
    Correlated to the enclosing query's ``user_id``: a probe per person, by their
    memberships, exceptions and requests."""
    kind = kinds.get((part.connector_id, part.action))
    if kind is None:
        return false()
    return or_(
        *(
            source.select(source.user_id, now=now)
            .where(source.user_id == user_id, *_covering(source, part, kind))
            .exists()
            for source in sources.SOURCES
        )
    )


def _covering(source: Any, part: Part, kind: ActionKind) -> tuple[Any, ...]:
    """SQL conditions on a source of access (:data:`sources.SOURCES`): it covers ``part``,
    an action of kind ``kind``: its connector, at a level allowing the kind, listing it."""
    return (
        source.connector_id == part.connector_id,
        source.access_level.in_(_levels(kind)),
        lists(source.actions, part.action),
    )


def _holders(part: Part, kinds: Kinds, now: dt.datetime) -> Select:
    """The people holding ``part``. A connector: a live grant of it. An action: a live grant
    of its connector and a live source of that access covering the action (:func:`_covered`)."""
    held = select(Grant.user_id).where(
        Grant.revoked_at.is_(None), Grant.connector_id == part.connector_id
    )
    if part.action is None:
        return held
    kind = kinds.get((part.connector_id, part.action))
    if kind is None:
        return held.where(false())
    covering = sources.union(
        lambda source: source.select(source.user_id.label("user_id"), now=now).where(
            *_covering(source, part, kind)
        )
    )
    return held.where(Grant.user_id.in_(covering))


def _holds(part: Part, kinds: Kinds, now: dt.datetime, user_id: Any) -> Any:
    """SQL condition: ``user_id`` (of the enclosing query) holds ``part``, as
    :func:`_holders` says, probed for that one person: their live grant of its connector,
    then (an action) their sources covering it (:func:`_covered`)."""
    held = select(Grant.user_id).where(
        Grant.revoked_at.is_(None),
        Grant.connector_id == part.connector_id,
        Grant.user_id == user_id,
    )
    if part.action is not None:
        held = held.where(_covered(part, kinds, now, Grant.user_id))
    return held.exists()


def _side(side: list[Any], kinds: Kinds, now: dt.datetime, within: Any = None) -> Select:
    """The people holding any part of ``side`` (column ``user_id``), of ``within`` (ids, or
    a query of them) if given: the whole connectors in one ``IN`` over live grants, each
    action with its covering sources."""
    whole = sorted(p.connector_id for p in parts(side) if p.action is None)
    selects = [_holders(p, kinds, now) for p in parts(side) if p.action is not None]
    if whole:
        selects.insert(
            0,
            select(Grant.user_id).where(Grant.revoked_at.is_(None), Grant.connector_id.in_(whole)),
        )
    if len(selects) == 1:
        return selects[0] if within is None else selects[0].where(Grant.user_id.in_(within))
    held = union(*selects).subquery()
    users = select(held.c.user_id)
    return users if within is None else users.where(held.c.user_id.in_(within))


def first_conflict(
    session: Session,
    connector_id: int,
    holders: Iterable[uuid.UUID] | Select,
    level: AccessLevel = AccessLevel.INTERACTIVE,
    actions: Iterable[str] | None = None,
) -> Conflict | None:
    """The first rule a grant of ``connector_id`` at ``level`` listing ``actions`` (None:
    all) to any of ``holders`` (ids, or a query of them) would break: it gives a part of
    both sides, or a part of one side to someone holding a part of the other, unexempt."""
    now = utcnow()
    if not isinstance(holders, Select):
        holders = list(holders)
        if not holders:
            return None
    rules = list(session.scalars(select(SeparationRule).order_by(SeparationRule.id)))
    kinds = _kinds(session, rules)
    for rule in rules:
        given = [
            any(covers(p, connector_id, level, actions, kinds) for p in parts(side))
            for side in (rule.these, rule.those)
        ]
        if given[0] and given[1]:
            users = select(User.id).where(User.id.in_(holders))
        elif given[0] or given[1]:
            other = _side(rule.those if given[0] else rule.these, kinds, now, holders).subquery()
            users = select(other.c.user_id)
        else:
            continue
        user_id = session.scalar(
            users.where(~_exempt(rule.id, users.selected_columns[0], now)).limit(1)
        )
        if user_id is not None:
            return Conflict(rule.id, rule.name, rule.reason, user_id, connector_id)
    return None


@dataclass
class Watch:
    """What the engine watches in one run: the connectors each rule's sides name (one
    query), and, filled as the run plans, the people of the run holding (before or after
    it) a connector of each side -- the only ones who may begin or end breaking it."""

    rules: list[SeparationRule]
    sides: dict[int, tuple[frozenset[int], frozenset[int]]]
    named: frozenset[int]
    candidates: dict[int, set[uuid.UUID]] = field(default_factory=dict)

    def note(self, user_id: uuid.UUID, connectors: set[int]) -> None:
        """``user_id`` holds (before or after the run) ``connectors``."""
        if not connectors & self.named:
            return
        for rule_id, (these, those) in self.sides.items():
            if connectors & these and connectors & those:
                self.candidates.setdefault(rule_id, set()).add(user_id)


def watch(session: Session) -> Watch | None:
    """The rules' sides as connectors, for an engine run (None: there is no rule)."""
    rules = list(session.scalars(select(SeparationRule).order_by(SeparationRule.id)))
    if not rules:
        return None
    sides = {rule.id: (_connectors(rule.these), _connectors(rule.those)) for rule in rules}
    named = frozenset(c for these, those in sides.values() for c in these | those)
    return Watch(rules, sides, named)


def _connectors(side: list[Any]) -> frozenset[int]:
    return frozenset(p.connector_id for p in parts(side))


# A ``separation_violation`` finding's subject type (its subject: ``RULE:USER``).
SUBJECT_TYPE = "separation"


@dataclass(frozen=True)
class Onset:
    """``user_id`` began breaking ``rule`` in an engine run (no current finding said so)."""

    rule: SeparationRule
    user_id: uuid.UUID
    user_name: str

    @property
    def subject(self) -> str:
        return f"{self.rule.id}:{self.user_id}"

    def __str__(self) -> str:
        return (
            f"separation of duties: user {self.user_id} holds both sides of rule "
            f"{self.rule.name!r} ({self.rule.reason})"
        )


def settle(session: Session, watched: Watch) -> list[Onset]:
    """After an engine run: who of its candidates breaks each rule now (one query per rule
    with candidates, none otherwise), against the current ``separation_violation`` findings
    of them. A violation without one is an onset: its finding is opened here (what the scan
    would open) and returned, for the engine to say aloud; an open finding whose violation
    is gone is resolved. The findings are the engine's memory of which violations were
    already said."""
    now = utcnow()
    kinds = _kinds(session, watched.rules)
    onsets: list[Onset] = []
    gone: list[str] = []
    for rule in watched.rules:
        candidates = sorted(watched.candidates.get(rule.id, ()))
        for chunk in chunked(candidates):
            breaking = _breaking(rule, kinds, now, list(chunk), _narrow(session))
            now_breaking = dict(
                session.execute(
                    select(User.id, User.user_name).where(User.id.in_(select(breaking.c.user_id)))
                ).all()
            )
            current = findings.current(
                session,
                FindingKind.SEPARATION_VIOLATION,
                SUBJECT_TYPE,
                [f"{rule.id}:{u}" for u in chunk],
            )
            for user_id in chunk:
                subject = f"{rule.id}:{user_id}"
                if user_id in now_breaking and subject not in current:
                    onsets.append(Onset(rule, user_id, now_breaking[user_id]))
                elif user_id not in now_breaking and current.get(subject) == FindingState.OPEN:
                    gone.append(subject)
    findings.note(
        session,
        FindingKind.SEPARATION_VIOLATION,
        Severity.HIGH,
        SUBJECT_TYPE,
        opened=[(o.subject, evidence(o.rule, o.user_name)) for o in onsets],
        gone=gone,
    )
    return onsets


def evidence(rule: SeparationRule, user_name: str) -> dict[str, Any]:
    """A ``separation_violation`` finding's evidence, as the scan writes it."""
    return {"rule": rule.name, "owner": rule.owner, "user": user_name}


@dataclass(frozen=True)
class Violation:
    """``user_id`` breaks ``rule`` because of a change: ``held`` names the side they held
    before it (empty: the change gave both sides), ``new`` the side it gave."""

    rule_id: int
    rule: str
    reason: str
    user_id: uuid.UUID
    user_name: str
    held: tuple[str, ...]
    new: tuple[str, ...]

    def conflict(self, connector_id: int) -> Conflict:
        return Conflict(self.rule_id, self.rule, self.reason, self.user_id, connector_id)


@dataclass
class Holdings:
    """Who of some people (``within``: a query of ids) held each side of each rule, taken
    before a change so that :func:`begun` tells the violations the change began."""

    within: Select
    sides: dict[int, tuple[set[uuid.UUID], set[uuid.UUID]]]


def holdings(session: Session, within: Select) -> Holdings:
    """Each rule's two sets of holders among ``within`` now (two queries per rule)."""
    now = utcnow()
    rules = list(session.scalars(select(SeparationRule).order_by(SeparationRule.id)))
    kinds = _kinds(session, rules)
    return Holdings(
        within,
        {
            rule.id: (
                set(session.scalars(_side(rule.these, kinds, now, within))),
                set(session.scalars(_side(rule.those, kinds, now, within))),
            )
            for rule in rules
        },
    )


def begun(session: Session, before: Holdings) -> list[Violation]:
    """The violations among ``before.within`` now that were not before: each person
    breaking a rule (unexempt) who did not hold both its sides (one query per rule)."""
    now = utcnow()
    rules = list(session.scalars(select(SeparationRule).order_by(SeparationRule.id)))
    kinds = _kinds(session, rules)
    slugs = dict(session.execute(select(Connector.id, Connector.slug)).all())
    found: list[Violation] = []
    for rule in rules:
        these, those = before.sides.get(rule.id, (set(), set()))
        breaking = _breaking(rule, kinds, now, before.within, _narrow(session))
        rows = session.execute(
            select(User.id, User.user_name)
            .where(User.id.in_(select(breaking.c.user_id)))
            .order_by(User.user_name)
        )
        names = [_names(rule.these, slugs), _names(rule.those, slugs)]
        for user_id, user_name in rows:
            if user_id in these and user_id in those:
                continue
            if user_id in these:
                held, new = names[0], names[1]
            elif user_id in those:
                held, new = names[1], names[0]
            else:
                held, new = (), (*names[0], *names[1])
            found.append(Violation(rule.id, rule.name, rule.reason, user_id, user_name, held, new))
    return found


def _names(side: list[Any], slugs: dict[int, str]) -> tuple[str, ...]:
    """A side's parts as people read them: ``slug`` or ``slug:action``."""
    return tuple(
        slugs.get(p.connector_id, str(p.connector_id)) + (f":{p.action}" if p.action else "")
        for p in parts(side)
    )


def _breaking(
    rule: SeparationRule, kinds: Kinds, now: dt.datetime, within: Any = None, narrow: bool = False
) -> Subquery:
    """The people (of ``within``, if given) holding a part of each side of ``rule``,
    unexempt (column ``user_id``). A rule naming actions first narrows to the people holding
    a connector of each side (one intersection over live grants, as for a rule of
    connectors), then probes each of them for each part (:func:`_holds`): an action's
    sources are read for those few people, not for every holder of its connector. Only
    where ``narrow`` (SQLite): PostgreSQL runs the nested probes as a subplan per person,
    seconds a rule, and its semi-joins of each holder set are faster there."""
    sides = (rule.these, rule.those)
    actions = narrow and any(p.action is not None for side in sides for p in parts(side))
    these, those = (
        _side(sorted(_connectors(side)) if actions else side, kinds, now, within) for side in sides
    )
    both = these.intersect(those).subquery()
    users = select(both.c.user_id).where(~_exempt(rule.id, both.c.user_id, now))
    if actions:
        users = users.where(
            *(or_(*(_holds(p, kinds, now, both.c.user_id) for p in parts(side))) for side in sides)
        )
    return users.subquery()


def _narrow(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def violation_sets(session: Session) -> Iterator[tuple[SeparationRule, Subquery]]:
    """Each rule with the query of the people breaking it (column ``user_id``): those
    holding a part of both sides, unexempt (an intersection of two sets of holders)."""
    now = utcnow()
    rules = list(session.scalars(select(SeparationRule).order_by(SeparationRule.id)))
    kinds = _kinds(session, rules)
    for rule in rules:
        yield rule, _breaking(rule, kinds, now, narrow=_narrow(session))


def violators(session: Session) -> Iterator[tuple[SeparationRule, uuid.UUID]]:
    """Every (rule, person) where the person holds both sides of the rule, unexempt: one
    query per rule."""
    for rule, users in violation_sets(session):
        for (user_id,) in session.execute(select(users.c.user_id)):
            yield rule, user_id


def create_rule(
    session: Session,
    origin: Origin,
    *,
    name: str,
    these: list[Connector | Action],
    those: list[Connector | Action],
    owner: str,
    reason: str,
) -> SeparationRule:
    """A new rule of incompatible access, each side connectors or actions of them (it
    applies to grants made from now on; the scan reports who already breaks it)."""
    if not these or not those:
        raise SeparationError("a rule names connectors or actions on both sides", "these")
    one, other = (sorted({_part(entry) for entry in side}, key=_order) for side in (these, those))
    for a in one:
        for b in other:
            if (a.connector_id == b.connector_id and None in (a.action, b.action)) or a == b:
                raise SeparationError(
                    "a connector or action cannot be incompatible with itself", "those"
                )
    if session.scalar(select(SeparationRule.id).where(SeparationRule.name == name)) is not None:
        raise SeparationError(f"a rule named {name!r} exists", "name")
    stored = [p.stored for p in one], [p.stored for p in other]
    rule = SeparationRule(
        name=name,
        these=stored[0],
        those=stored[1],
        owner=owner,
        reason=reason,
        created_by=origin.actor,
    )
    session.add(rule)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "separation_rule.created",
                "separation_rule",
                str(rule.id),
                reason=reason,
                after={"name": name, "these": stored[0], "those": stored[1], "owner": owner},
            )
        ],
    )
    return rule


def _order(part: Part) -> tuple[int, str]:
    return part.connector_id, part.action or ""


def _part(entry: Connector | Action) -> Part:
    if isinstance(entry, Action):
        return Part(entry.connector_id, entry.name)
    return Part(entry.id)


def delete_rule(session: Session, origin: Origin, rule: SeparationRule) -> None:
    before = {"name": rule.name, "these": rule.these, "those": rule.those, "owner": rule.owner}
    session.delete(rule)
    session.flush()
    record(
        session,
        origin,
        [Entry("separation_rule.deleted", "separation_rule", str(rule.id), before=before)],
    )


def exempt(
    session: Session,
    origin: Origin,
    rule: SeparationRule,
    user_id: uuid.UUID,
    *,
    justification: str,
    expires_at: dt.datetime,
) -> SeparationExemption:
    """Let one person hold what ``rule`` forbids until ``expires_at`` (approved by the actor)."""
    if not justification or not justification.strip():
        raise SeparationError("an exemption needs a justification", "justification")
    if expires_at <= utcnow():
        raise SeparationError("an exemption needs an expiry in the future", "expires_at")
    exemption = SeparationExemption(
        rule_id=rule.id,
        user_id=user_id,
        justification=justification.strip(),
        approved_by=origin.actor,
        expires_at=expires_at,
    )
    session.add(exemption)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "separation_exemption.created",
                "separation_rule",
                str(rule.id),
                user_id=user_id,
                reason=exemption.justification,
                after={"rule": rule.name, "expires_at": expires_at},
            )
        ],
    )
    return exemption
