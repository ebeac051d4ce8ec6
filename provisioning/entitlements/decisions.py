"""Decisions from committed facts: load what effective policy needs, decide, and note last use.

:func:`decide` reads the user, the connector, the action and the user's live
sources of access to that connector (present memberships of live mappings,
live exceptions) and hands them to the pure
:func:`provisioning.entitlements.policy.effective_policy`.

Recording each decision's use of a grant would be one write per call on the
hot path. :class:`LastUseRecorder` coalesces them instead: it keeps the latest
use per grant in memory and writes them in one statement batch when
``max_pending`` grants are waiting or ``interval`` seconds have passed since
the last flush (checked on each call), and at process exit. Staleness is
measured in months, so a use reaching the database a few seconds late, or a
use lost when a process is killed, does not change any finding.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import threading
import time
import uuid
import weakref
from dataclasses import dataclass

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from provisioning.connectors.governance import enablement_problems
from provisioning.connectors.models import (
    AccessLevel,
    Action,
    Connector,
    Interface,
    Policy,
)
from provisioning.database import Database, UTCDateTime, utcnow
from provisioning.entitlements.models import Grant, ManualException, Mapping
from provisioning.entitlements.policy import (
    ActionFacts,
    ConnectorFacts,
    Decision,
    Entitlement,
    UserState,
    Verdict,
    effective_policy,
)
from provisioning.identity.models import Membership, User


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
    # The live grant the decision used, if any (its last use is recorded).
    grant_id: int | None = None


def user_state(user: User) -> UserState:
    if user.deleted_at is not None:
        return UserState.DELETED
    if user.offboarded_at is not None:
        return UserState.OFFBOARDED
    if not user.active:
        return UserState.DEACTIVATED
    return UserState.ACTIVE


def find_user(session: Session, user: str) -> User | None:
    """A user by id, or by userName (without regard to case) among undeleted users."""
    try:
        user_id = uuid.UUID(user)
    except ValueError:
        return session.scalar(
            select(User).where(User.user_name_key == user.lower(), User.deleted_at.is_(None))
        )
    return session.get(User, user_id)


def connector_facts(connector: Connector) -> ConnectorFacts:
    return ConnectorFacts(
        slug=connector.slug,
        kind=connector.kind,
        capability=connector.capability,
        enabled=connector.enabled,
        interfaces=frozenset(Interface(i) for i in connector.interfaces),
        governance_problems=enablement_problems(connector),
        unknown_action_policy=connector.unknown_action_policy,
    )


def entitlements(session: Session, user_id: uuid.UUID, connector_id: int) -> list[Entitlement]:
    """The user's live sources of access to the connector (mappings via groups, exceptions)."""
    now = utcnow()
    sources: list[Entitlement] = []
    mappings = session.execute(
        select(Mapping.id, Mapping.access_level, Mapping.actions, Mapping.policies)
        .join(Membership, Membership.group_id == Mapping.group_id)
        .where(
            Membership.user_id == user_id,
            Membership.present.is_(True),
            Mapping.connector_id == connector_id,
            or_(Mapping.expires_at.is_(None), Mapping.expires_at > now),
        )
    )
    for id_, level, actions, policies in mappings:
        sources.append(
            Entitlement(
                f"mapping:{id_}",
                AccessLevel(level),
                None if actions is None else frozenset(actions),
                {name: Policy(p) for name, p in (policies or {}).items()},
            )
        )
    exceptions = session.execute(
        select(ManualException.id, ManualException.access_level, ManualException.actions).where(
            ManualException.user_id == user_id,
            ManualException.connector_id == connector_id,
            ManualException.revoked_at.is_(None),
            ManualException.expires_at > now,
        )
    )
    for id_, level, actions in exceptions:
        sources.append(
            Entitlement(
                f"exception:{id_}",
                AccessLevel(level),
                None if actions is None else frozenset(actions),
            )
        )
    return sources


def decide(session: Session, question: Question) -> Answer:
    """The decision for one call, from the state committed in ``session``'s snapshot."""
    user = find_user(session, question.user)
    if user is None:
        return Answer(Decision.DENY, (f"unknown user {question.user}",))
    connector = session.scalar(select(Connector).where(Connector.slug == question.connector))
    if connector is None:
        return Answer(Decision.DENY, (f"unknown connector {question.connector}",))
    action = session.scalar(
        select(Action).where(Action.connector_id == connector.id, Action.name == question.action)
    )
    facts = None if action is None else ActionFacts(action.name, action.kind, action.org_policy)
    state = user_state(user)
    sources = entitlements(session, user.id, connector.id) if state is UserState.ACTIVE else []
    verdict: Verdict = effective_policy(
        state, connector_facts(connector), question.action, facts, question.interface, sources
    )
    grant_id = None
    if verdict.decision is not Decision.DENY:
        grant_id = session.scalar(
            select(Grant.id).where(
                Grant.user_id == user.id,
                Grant.connector_id == connector.id,
                Grant.revoked_at.is_(None),
            )
        )
    return Answer(verdict.decision, verdict.reasons, grant_id)


class LastUseRecorder:
    """Coalesces grants' last-use times in memory and writes them in batches."""

    def __init__(
        self, database: Database, *, max_pending: int = 500, interval: float = 5.0
    ) -> None:
        self.database = database
        self.max_pending = max_pending
        self.interval = interval
        self._pending: dict[int, dt.datetime] = {}
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        atexit.register(_flush_at_exit, weakref.ref(self))

    def used(self, grant_id: int, at: dt.datetime | None = None) -> None:
        """Note a use of the grant; flush if enough are waiting or enough time has passed."""
        at = at or utcnow()
        with self._lock:
            previous = self._pending.get(grant_id)
            if previous is None or at > previous:
                self._pending[grant_id] = at
            due = (
                len(self._pending) >= self.max_pending
                or time.monotonic() - self._last_flush >= self.interval
            )
        if due:
            self.flush()

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
        grants = Grant.__table__
        used_at = bindparam("used_at", type_=UTCDateTime())
        statement = (
            update(grants)
            .where(
                grants.c.id == bindparam("grant_id"),
                or_(grants.c.last_used_at.is_(None), grants.c.last_used_at < used_at),
            )
            .values(last_used_at=used_at)
        )
        rows = [{"grant_id": gid, "used_at": at} for gid, at in sorted(batch.items())]
        try:
            with self.database.engine.begin() as conn:
                conn.execute(statement, rows)
        except Exception:
            # Put them back so the next flush retries; a newer use wins over these.
            with self._lock:
                for gid, at in batch.items():
                    if gid not in self._pending or self._pending[gid] < at:
                        self._pending[gid] = at
            raise
        return len(rows)


def _flush_at_exit(ref: weakref.ref[LastUseRecorder]) -> None:
    recorder = ref()
    if recorder is None:
        return
    try:
        recorder.flush()
    except Exception:  # at exit the database may be gone; a lost last use is tolerable
        logging.getLogger(__name__).warning("last uses could not be written at exit")
