"""Decisions from committed facts: load what effective policy needs, decide, and note last use.

:func:`decide` reads the user, the connector, the action and the user's live
sources of access to that connector (:mod:`provisioning.entitlements.sources`,
the engine's own) and hands them to the pure
:func:`provisioning.entitlements.policy.effective_policy`. :func:`decide_many`
answers a batch (a gateway deciding a whole ``tools/list``) set-wise: the same
facts for every question in a few statements, the same function for each answer.

Recording each decision's use of a grant would be one write per call on the
hot path. :class:`LastUseRecorder` coalesces them instead: it keeps the latest
use per grant in memory and writes them in one statement when
``max_pending`` grants are waiting or ``interval`` seconds have passed, and at
process exit; the web process does this from a background thread, so no
request waits for the write. Staleness is
measured in months, so a use reaching the database a few seconds late, or a
use lost when a process is killed, does not change any finding.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import threading
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Select, and_, bindparam, select, true, type_coerce
from sqlalchemy.orm import Session

from provisioning import text
from provisioning.connectors.governance import enablement_problems
from provisioning.connectors.models import (
    AccessLevel,
    Action,
    ActionKind,
    Connector,
    Interface,
    Policy,
)
from provisioning.database import (
    Database,
    Reader,
    UTCDateTime,
    connection_of,
    session_of,
    utcnow,
)
from provisioning.entitlements import sources as kinds
from provisioning.entitlements.models import Grant
from provisioning.entitlements.policy import (
    ActionFacts,
    ConnectorFacts,
    Decision,
    Entitlement,
    UserState,
    Verdict,
    effective_policy,
)
from provisioning.hotpath import Prepared
from provisioning.identity.models import User


@dataclass(frozen=True)
class Question:
    """May ``user`` (id or userName) call ``action`` of ``connector`` from ``interface``?"""

    user: str
    connector: str
    action: str
    interface: Interface


@dataclass(frozen=True)
class Answer:
    decision: Decision
    reasons: tuple[str, ...]
    # The live grant the decision used, if any (its last use is recorded), and the
    # last use recorded for it so far.
    grant_id: int | None = None
    last_used_at: dt.datetime | None = None
    # A needs_approval whose action wants a second person's approval of the call, not
    # only the caller's confirmation (provisioning/entitlements/approvals.py).
    requires_approver: bool = False


def find_user(session: Session, user: str) -> User | None:
    """A user by id, or by userName (without regard to case) among undeleted users."""
    try:
        user_id = uuid.UUID(user)
    except ValueError:
        return session.scalar(
            select(User).where(User.user_name_key == text.fold(user), User.deleted_at.is_(None))
        )
    return session.get(User, user_id)


def connector_facts(connector: Any) -> ConnectorFacts:
    """What effective policy needs of a connector (a :class:`Connector` or a row of its
    columns)."""
    return ConnectorFacts(
        slug=connector.slug,
        kind=connector.kind,
        capability=connector.capability,
        enabled=connector.enabled,
        interfaces=frozenset(Interface(i) for i in connector.interfaces),
        governance_problems=enablement_problems(connector),
        unknown_action_policy=connector.unknown_action_policy,
    )


# Decisions sit on the hot path of every gateway call: their statements are built
# once, with bind parameters, and run on the driver's cursor (see Prepared).
_U, _C, _A, _G = User.__table__, Connector.__table__, Action.__table__, Grant.__table__


def _sources_statement(where: Callable[[kinds.Source], tuple], *keys: str) -> Any:
    """The live sources of access, as the engine counts them, that ``where`` picks: what
    a decision reads of each, after the source's own ``keys`` (``user_id``,
    ``connector_id``) if asked."""
    return kinds.union(
        lambda source: source.select(
            *(getattr(source, key).label(key) for key in keys),
            source.label,
            source.ref.label("id"),
            source.access_level.label("access_level"),
            source.actions.label("actions"),
            source.policies.label("policies"),
            now=bindparam("now"),
        ).where(*where(source))
    )


# What a decision reads of a connector (connector_facts) and of an action (action_facts).
_CONNECTOR_AND_ACTION = (
    _C.c.id.label("connector_id"),
    _C.c.slug,
    _C.c.kind,
    _C.c.capability,
    _C.c.enabled,
    _C.c.interfaces,
    _C.c.publisher,
    _C.c.security_review,
    _C.c.data_classification,
    _C.c.compliance_assessment,
    _C.c.unknown_action_policy,
    _A.c.name.label("action_name"),
    _A.c.kind.label("action_kind"),
    _A.c.org_policy,
    # Read as it is stored (0/1 on SQLite): without the Boolean type's per-row conversion,
    # which a batch's hundreds of rows would pay (action_facts makes it a bool).
    type_coerce(_A.c.requires_approver, Integer).label("requires_approver"),
)


def _facts_statement(user_condition: Any, user_id: Any) -> Select:
    """One row per source (or one with no source) of everything a decision needs."""
    connector_id = select(_C.c.id).where(_C.c.slug == bindparam("connector")).scalar_subquery()
    sources = _sources_statement(
        lambda source: (source.user_id == user_id, source.connector_id == connector_id)
    ).subquery("sources")
    return (
        select(
            _U.c.id.label("user_id"),
            User.state.label("state"),
            *_CONNECTOR_AND_ACTION,
            _G.c.id.label("grant_id"),
            _G.c.last_used_at,
            sources.c.via,
            sources.c.id.label("source_id"),
            sources.c.access_level.label("source_level"),
            sources.c.actions.label("source_actions"),
            sources.c.policies.label("source_policies"),
        )
        .select_from(
            _U.join(_C, true())
            .outerjoin(_A, and_(_A.c.connector_id == _C.c.id, _A.c.name == bindparam("action")))
            .outerjoin(
                _G,
                and_(
                    _G.c.user_id == _U.c.id,
                    _G.c.connector_id == _C.c.id,
                    _G.c.revoked_at.is_(None),
                ),
            )
            .outerjoin(sources, true())
        )
        .where(user_condition, _C.c.slug == bindparam("connector"))
        .order_by(sources.c.via, sources.c.id)
    )


_FACTS_BY_NAME = Prepared(
    _facts_statement(
        and_(_U.c.user_name_key == bindparam("user_key"), _U.c.deleted_at.is_(None)),
        select(_U.c.id)
        .where(_U.c.user_name_key == bindparam("user_key"), _U.c.deleted_at.is_(None))
        .scalar_subquery(),
    )
)
_FACTS_BY_ID = Prepared(
    _facts_statement(_U.c.id == bindparam("user_id"), bindparam("user_id", type_=_U.c.id.type))
)


def entitlement(via: str, id_: int, level: Any, actions: Any, policies: Any) -> Entitlement:
    """One source's row as effective policy takes it."""
    return Entitlement(
        f"{via}:{id_}",
        AccessLevel(level),
        None if actions is None else frozenset(actions),
        {name: Policy(p) for name, p in (policies or {}).items()},
    )


def decide(reader: Reader, question: Question) -> Answer:
    """The decision for one call, from the state committed in ``reader``'s snapshot."""
    params: dict[str, Any] = {
        "connector": question.connector,
        "action": question.action,
        "now": utcnow(),
    }
    try:
        params["user_id"] = uuid.UUID(question.user)
        statement = _FACTS_BY_ID
    except ValueError:
        params["user_key"] = text.fold(question.user)
        statement = _FACTS_BY_NAME
    rows = statement.all(connection_of(reader), params)
    if not rows:
        session = session_of(reader)
        try:
            known = find_user(session, question.user) is not None
        finally:
            if session is not reader:
                session.close()  # leaves the given connection as it was
        if not known:
            return Answer(Decision.DENY, (f"unknown user {question.user}",))
        return Answer(Decision.DENY, (f"unknown connector {question.connector}",))
    row = rows[0]
    sources = [
        entitlement(r.via, r.source_id, r.source_level, r.source_actions, r.source_policies)
        for r in rows
        if r.via is not None
    ]
    facts = connector_facts(row)
    return _answer(
        question, row.state, facts, action_facts(row), row.grant_id, row.last_used_at, sources
    )


def action_facts(row: Any) -> ActionFacts | None:
    """What effective policy needs of an action, from a row of its columns (None: the
    connector's catalogue does not hold it)."""
    if row.action_name is None:
        return None
    return ActionFacts(
        row.action_name,
        ActionKind(row.action_kind),
        Policy(row.org_policy),
        bool(row.requires_approver),
    )


def _answer(
    question: Question,
    state: str,
    connector: ConnectorFacts,
    action: ActionFacts | None,
    grant_id: int | None,
    last_used_at: dt.datetime | None,
    sources: list[Entitlement],
) -> Answer:
    """The decision from the facts read: the person's state, the connector, the action
    (None: not catalogued), the live grant and the live sources."""
    verdict: Verdict = effective_policy(
        UserState(state), connector, question.action, action, question.interface, sources
    )
    if verdict.decision is Decision.DENY:
        return Answer(verdict.decision, verdict.reasons)
    approver = (
        verdict.decision is Decision.NEEDS_APPROVAL
        and action is not None
        and action.requires_approver
    )
    return Answer(verdict.decision, verdict.reasons, grant_id, last_used_at, approver)


# A batch's statements, built once: each takes its keys as one expanding IN parameter.
_PEOPLE = select(_U.c.id, _U.c.user_name_key, User.state.label("state"))
_PEOPLE_BY_ID = _PEOPLE.where(_U.c.id.in_(bindparam("ids", expanding=True)))
_PEOPLE_BY_NAME = _PEOPLE.where(
    _U.c.user_name_key.in_(bindparam("keys", expanding=True)), _U.c.deleted_at.is_(None)
)
_CATALOGUE = (
    select(*_CONNECTOR_AND_ACTION)
    .select_from(
        _C.outerjoin(
            _A,
            and_(
                _A.c.connector_id == _C.c.id,
                _A.c.name.in_(bindparam("actions", expanding=True)),
            ),
        )
    )
    .where(_C.c.slug.in_(bindparam("slugs", expanding=True)))
)
_USERS_IN = bindparam("users", expanding=True)
_CONNECTORS_IN = bindparam("connectors", expanding=True)
_LIVE_SOURCES = _sources_statement(
    lambda source: (source.user_id.in_(_USERS_IN), source.connector_id.in_(_CONNECTORS_IN)),
    "user_id",
    "connector_id",
).subquery("sources")
# Each live source with the person's live grant of its connector: a decision names a
# grant only when a source allows the call, so grants without sources are not needed.
_SOURCES = select(_LIVE_SOURCES, _G.c.id.label("grant_id"), _G.c.last_used_at).select_from(
    _LIVE_SOURCES.outerjoin(
        _G,
        and_(
            _G.c.user_id == _LIVE_SOURCES.c.user_id,
            _G.c.connector_id == _LIVE_SOURCES.c.connector_id,
            _G.c.revoked_at.is_(None),
        ),
    )
)


def decide_many(reader: Reader, questions: Sequence[Question]) -> list[Answer]:
    """The decisions for many calls, in order: what :func:`decide` answers for each, read
    set-wise in at most four statements whatever their number (the people by id, by
    userName, the connectors with the actions asked, the live sources of each person's
    access to each connector with their live grants: a round trip each). A gateway
    deciding a whole ``tools/list`` asks this. Each statement reads what is committed
    when it runs (a revocation committed between two of them denies: the sources
    decide)."""
    if len(questions) < 2:  # one is fastest as decide's one prepared statement
        return [decide(reader, question) for question in questions]
    connection = connection_of(reader)
    keys: list[Any] = []  # each question's person: a UUID, or a userName key
    for question in questions:
        try:
            keys.append(uuid.UUID(question.user))
        except ValueError:
            keys.append(text.fold(question.user))
    ids = {k for k in keys if isinstance(k, uuid.UUID)}
    names = {k for k in keys if not isinstance(k, uuid.UUID)}
    people: dict[Any, tuple[Any, str]] = {}  # a UUID or a userName key -> (id, state)
    if ids:
        for row in connection.execute(_PEOPLE_BY_ID, {"ids": list(ids)}):
            people[row.id] = (row.id, row.state)
    if names:
        for row in connection.execute(_PEOPLE_BY_NAME, {"keys": list(names)}):
            people[row.user_name_key] = (row.id, row.state)
    connectors: dict[str, tuple[Any, ConnectorFacts]] = {}
    actions: dict[tuple[Any, str], ActionFacts] = {}
    catalogue = connection.execute(
        _CATALOGUE,
        {
            "slugs": list({q.connector for q in questions}),
            "actions": list({q.action for q in questions}),
        },
    )
    for row in catalogue:
        if row.slug not in connectors:
            connectors[row.slug] = (row.connector_id, connector_facts(row))
        facts = action_facts(row)
        if facts is not None:
            actions[row.connector_id, facts.name] = facts
    grants: dict[tuple[Any, Any], Any] = {}
    sources: dict[tuple[Any, Any], list[tuple[str, int, Entitlement]]] = defaultdict(list)
    if people and connectors:
        pairs = {
            "users": list({found[0] for found in people.values()}),
            "connectors": [connector_id for connector_id, _ in connectors.values()],
            "now": utcnow(),
        }
        for r in connection.execute(_SOURCES, pairs):
            given = entitlement(r.via, r.id, r.access_level, r.actions, r.policies)
            sources[r.user_id, r.connector_id].append((r.via, r.id, given))
            if r.grant_id is not None:
                grants[r.user_id, r.connector_id] = r
    answers = []
    for question, key in zip(questions, keys, strict=True):
        found = people.get(key)
        if found is None:
            answers.append(Answer(Decision.DENY, (f"unknown user {question.user}",)))
            continue
        held = connectors.get(question.connector)
        if held is None:
            answers.append(Answer(Decision.DENY, (f"unknown connector {question.connector}",)))
            continue
        pair = (found[0], held[0])
        grant = grants.get(pair)
        given = [e for _, _, e in sorted(sources.get(pair, ()), key=lambda s: s[:2])]
        answers.append(
            _answer(
                question,
                found[1],
                held[1],
                actions.get((held[0], question.action)),
                None if grant is None else grant.grant_id,
                None if grant is None else grant.last_used_at,
                given,
            )
        )
    return answers


# A grant's use: when, the agent acting for the person, the AuthZEN evaluation's id.
Use = tuple[dt.datetime, str | None, str | None]


class LastUseRecorder:
    """Coalesces grants' last-use times in memory and writes them in batches.

    A use within ``resolution`` of the use already recorded for the grant is not
    written again: a gateway asking about one user's connector all day writes its
    grant once an hour, not once per batch.
    """

    def __init__(
        self,
        database: Database,
        *,
        max_pending: int = 500,
        interval: float = 5.0,
        background: bool = False,
        resolution: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        self.database = database
        self.max_pending = max_pending
        self.interval = interval
        self.resolution = resolution
        # In the background, a daemon thread (started on first use, so after any fork)
        # writes the batches and no request ever waits for one.
        self.background = background
        # grant id: (when, the agent acting, the AuthZEN evaluation id) of its latest use
        self._pending: dict[int, Use] = {}
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._due = threading.Event()
        self._thread: threading.Thread | None = None
        atexit.register(_flush_at_exit, weakref.ref(self))

    def used(
        self,
        grant_id: int,
        at: dt.datetime | None = None,
        *,
        recorded: dt.datetime | None = None,
        agent: str | None = None,
        evaluation_id: str | None = None,
    ) -> None:
        """Note a use of the grant (whose last use so far is ``recorded``, if known), by
        ``agent`` acting for the person, answered as ``evaluation_id``; flush if enough are
        waiting or enough time has passed. The use written is the latest: its agent and
        evaluation go with it."""
        at = at or utcnow()
        if recorded is not None and at - recorded < self.resolution:
            return
        with self._lock:
            previous = self._pending.get(grant_id)
            if previous is None or at > previous[0]:
                self._pending[grant_id] = (at, agent, evaluation_id)
            due = (
                len(self._pending) >= self.max_pending
                or time.monotonic() - self._last_flush >= self.interval
            )
        if self.background:
            self._start()
            if due:
                self._due.set()
        elif due:
            self.flush()

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=_flush_in_background,
                    args=(weakref.ref(self), self._due),
                    name="last-use-flush",
                    daemon=True,
                )
                self._thread.start()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write every waiting last use (never moving one backwards); return how many."""
        with self._lock:
            batch, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        if not batch:
            return 0
        dialect = self.database.engine.dialect
        stamp = UTCDateTime().dialect_impl(dialect).bind_processor(dialect) or (lambda at: at)
        try:
            # A transaction like any other writer's: on SQLite it queues with them and
            # counts towards the next checkpoint, so the log does not grow unbounded.
            with self.database.transaction() as session:
                conn = session.connection()
                if dialect.name == "sqlite":
                    used = {str(gid): [stamp(u[0]), *u[1:]] for gid, u in batch.items()}
                    conn.exec_driver_sql(_FLUSH_SQLITE, (json.dumps(used),))
                else:
                    # In grant order: flushes of several processes lock rows in one order.
                    ids, uses = zip(*sorted(batch.items()), strict=True)
                    conn.exec_driver_sql(
                        _FLUSH_POSTGRESQL,
                        {
                            "ids": list(ids),
                            "times": [stamp(u[0]) for u in uses],
                            "agents": [u[1] for u in uses],
                            "evaluations": [u[2] for u in uses],
                        },
                    )
        except Exception:
            # Put them back so the next flush retries; a newer use wins over these.
            with self._lock:
                for gid, use in batch.items():
                    if gid not in self._pending or self._pending[gid][0] < use[0]:
                        self._pending[gid] = use
            raise
        return len(batch)


# A flush is one statement whatever its size, its rows passed as one parameter: the
# database does the work, and the flushing thread holds the GIL for microseconds, not
# for the milliseconds 500 rows through executemany took (the requests of its process
# waited on it: a single client's p99 was about 2 ms without it, about 5 ms with it).
# Times are in each database's own storage form (UTCDateTime's bind processor).
_FLUSH_SQLITE = """
UPDATE grants SET last_used_at = json_extract(used.value, '$[0]'),
  last_used_agent = json_extract(used.value, '$[1]'),
  last_evaluation_id = json_extract(used.value, '$[2]')
FROM json_each(?) AS used
WHERE grants.id = CAST(used.key AS INTEGER)
  AND (grants.last_used_at IS NULL OR grants.last_used_at < json_extract(used.value, '$[0]'))
"""
_FLUSH_POSTGRESQL = """
UPDATE grants SET last_used_at = used.at, last_used_agent = used.agent,
  last_evaluation_id = used.evaluation
FROM unnest(%(ids)s::bigint[], %(times)s::timestamp[], %(agents)s::text[],
  %(evaluations)s::text[]) AS used(id, at, agent, evaluation)
WHERE grants.id = used.id
  AND (grants.last_used_at IS NULL OR grants.last_used_at < used.at)
"""


def _flush_in_background(ref: weakref.ref[LastUseRecorder], due: threading.Event) -> None:
    while True:
        recorder = ref()
        if recorder is None:
            return
        interval = recorder.interval
        del recorder
        due.wait(timeout=interval)
        due.clear()
        recorder = ref()
        if recorder is None:
            return
        try:
            recorder.flush()
        except Exception:  # kept pending by flush; the next round retries
            logging.getLogger(__name__).exception("last uses could not be written")
        del recorder


def _flush_at_exit(ref: weakref.ref[LastUseRecorder]) -> None:
    recorder = ref()
    if recorder is None:
        return
    try:
        recorder.flush()
    except Exception:  # at exit the database may be gone; a lost last use is tolerable
        logging.getLogger(__name__).warning("last uses could not be written at exit")
