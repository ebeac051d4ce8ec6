"""The delivery worker: claims outbox messages, sends them in order, retries, dead-letters.

A round (:meth:`Deliverer.deliver_once`):

1. **Claim**, in one short transaction: the oldest due *heads* (a pending
   message with no earlier pending message for the same target and user),
   locked with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so several workers
   share the load without taking the same row, then the messages queued
   behind each head. All of them are leased (``leased_until``): if this worker
   dies, the lease runs out and another takes them over. Nothing else can
   claim a leased chain, since only a chain's head is ever claimable.
2. **Send**, outside any transaction: chains in parallel, each chain in
   ``id`` order, stopping at its first failure so that nothing overtakes it.
3. **Settle**, in one transaction: acknowledged messages are marked
   delivered; a failed one waits ``backoff x 2^(attempt-1)`` (capped, with
   jitter) or, after the target's ``max_attempts``, is dead-lettered and a
   finding opened; the ones queued behind it are handed back untouched.

A crash between send and settle sends again later (at least once): every
attempt carries the same event id, so receivers drop the repeat.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import exists, or_, select, tuple_, update
from sqlalchemy.orm import aliased

from provisioning import liveness
from provisioning.database import Database, utcnow
from provisioning.delivery import outbox
from provisioning.delivery.message import DeliveryFailed, Message
from provisioning.delivery.models import MessageState, OutboxMessage, Target, TargetKind
from provisioning.metrics import DELIVERY_ACK_SECONDS, DELIVERY_ATTEMPTS
from provisioning.settings import Settings

log = logging.getLogger(__name__)


class Sender(Protocol):
    def send(self, message: Message) -> None: ...

    def close(self) -> None: ...


def sender_for(target: Target, *, timeout: float) -> Sender:
    if target.kind == TargetKind.WEBHOOK:
        from provisioning.delivery.webhook import WebhookSender

        return WebhookSender(target.url, target.secret, timeout=timeout)
    from provisioning.delivery.outbound_scim import ScimSender

    return ScimSender(target.url, target.secret, timeout=timeout)


@dataclass
class Claimed:
    message: Message
    target_id: int
    attempts: int  # including this one


@dataclass
class Round:
    """What one round did."""

    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0


@dataclass
class _Outcome:
    delivered: list[Claimed] = field(default_factory=list)
    failed: list[tuple[Claimed, str]] = field(default_factory=list)
    released: list[Claimed] = field(default_factory=list)


def backoff(attempts: int, *, base: float, cap: float) -> float:
    """Seconds before the next attempt: exponential, capped, half of it jittered."""
    delay = min(cap, base * 2 ** max(attempts - 1, 0))
    return delay / 2 + random.uniform(0, delay / 2)


class Deliverer:
    """Delivers the outbox: in a background thread (:meth:`start`) or round by round."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        batch: int | None = None,
        per_chain: int = 50,
    ) -> None:
        self.database, self.settings = database, settings
        self.batch, self.per_chain = batch or settings.delivery_batch, per_chain
        self._senders: dict[int, tuple[int, Sender]] = {}
        self._targets: dict[int, tuple[str, int]] = {}  # id -> (name, max_attempts)
        self._pool = ThreadPoolExecutor(settings.delivery_concurrency, "delivery")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop = liveness.Loop(
            "outbox-delivery",
            # A round longer than the lease has lost its claims to other workers anyway.
            stall_after=settings.delivery_lease_seconds + settings.delivery_poll_seconds,
        )
        self._unsubscribe = outbox.on_enqueued(self._wake.set)

    # -- one round ---------------------------------------------------------

    def deliver_once(self) -> Round:
        chains = self._claim()
        result = Round(claimed=sum(len(c) for c in chains))
        if not chains:
            return result
        outcome = _Outcome()
        for part in self._pool.map(self._send_chain, chains):
            outcome.delivered += part.delivered
            outcome.failed += part.failed
            outcome.released += part.released
        self._settle(outcome, result)
        return result

    def drain(self, *, rounds: int = 10_000) -> Round:
        """Deliver until nothing is due (or ``rounds`` ran); return the totals."""
        total = Round()
        for _ in range(rounds):
            done = self.deliver_once()
            for name in ("claimed", "delivered", "failed", "dead", "released"):
                setattr(total, name, getattr(total, name) + getattr(done, name))
            if not done.claimed:
                break
        return total

    def _claim(self) -> list[list[Claimed]]:
        now = utcnow()
        lease = now + dt.timedelta(seconds=self.settings.delivery_lease_seconds)
        m, earlier = OutboxMessage, aliased(OutboxMessage)
        # A read first: an idle worker must not take SQLite's write lock every poll.
        with self.database.reader() as session:
            due = session.scalar(
                select(m.id)
                .where(
                    m.state == MessageState.PENDING,
                    m.next_attempt_at <= now,
                    or_(m.leased_until.is_(None), m.leased_until <= now),
                )
                .limit(1)
            )
        if due is None:
            return []
        with self.database.transaction() as session:
            heads = session.execute(
                select(m.target_id, m.user_id)
                .join(Target, Target.id == m.target_id)
                .where(
                    m.state == MessageState.PENDING,
                    m.next_attempt_at <= now,
                    or_(m.leased_until.is_(None), m.leased_until <= now),
                    Target.enabled.is_(True),
                    ~exists().where(
                        earlier.target_id == m.target_id,
                        earlier.user_id == m.user_id,
                        earlier.state == MessageState.PENDING,
                        earlier.id < m.id,
                    ),
                )
                .order_by(m.id)
                .limit(self.batch)
                .with_for_update(skip_locked=True, of=m)
            ).all()
            if not heads:
                return []
            rows = session.execute(
                select(
                    m.id,
                    m.event_id,
                    m.event_type,
                    m.user_id,
                    m.payload,
                    m.created_at,
                    m.target_id,
                    m.attempts,
                )
                .where(
                    m.state == MessageState.PENDING,
                    tuple_(m.target_id, m.user_id).in_([tuple(h) for h in heads]),
                )
                .order_by(m.id)
            ).all()
            chains: dict[tuple[int, object], list[Claimed]] = defaultdict(list)
            for row in rows:
                chain = chains[(row.target_id, row.user_id)]
                if len(chain) < self.per_chain:
                    message = Message(*row[:6])
                    chain.append(Claimed(message, row.target_id, row.attempts + 1))
            claimed = [c.message.id for chain in chains.values() for c in chain]
            for start in range(0, len(claimed), 1000):
                session.execute(
                    update(m)
                    .where(m.id.in_(claimed[start : start + 1000]))
                    .values(leased_until=lease, attempts=m.attempts + 1)
                )
            self._refresh_senders(session, {target for target, _ in chains})
        return list(chains.values())

    def _refresh_senders(self, session, target_ids: set[int]) -> None:
        for target in session.scalars(select(Target).where(Target.id.in_(target_ids))):
            held = self._senders.get(target.id)
            if held is None or held[0] != target.version:
                if held is not None:
                    held[1].close()
                sender = sender_for(target, timeout=self.settings.delivery_timeout_seconds)
                self._senders[target.id] = (target.version, sender)
            self._targets[target.id] = (target.name, target.max_attempts)

    def _send_chain(self, chain: list[Claimed]) -> _Outcome:
        outcome = _Outcome()
        sender = self._senders[chain[0].target_id][1]
        name = self._targets[chain[0].target_id][0]
        for n, claimed in enumerate(chain):
            try:
                sender.send(claimed.message)
            except DeliveryFailed as exc:
                error = str(exc)
            except Exception as exc:  # a sender bug must not lose the message either
                log.exception("delivery of message %s failed unexpectedly", claimed.message.id)
                error = f"{type(exc).__name__}: {exc}"
            else:
                outcome.delivered.append(claimed)
                DELIVERY_ATTEMPTS.labels(target=name, outcome="delivered").inc()
                continue
            DELIVERY_ATTEMPTS.labels(target=name, outcome="failed").inc()
            outcome.failed.append((claimed, error[:2000]))
            outcome.released += chain[n + 1 :]
            break
        return outcome

    def _settle(self, outcome: _Outcome, result: Round) -> None:
        now = utcnow()
        m = OutboxMessage
        dead = 0
        with self.database.transaction() as session:
            ids = [c.message.id for c in outcome.delivered]
            for start in range(0, len(ids), 1000):
                session.execute(
                    update(m)
                    .where(m.id.in_(ids[start : start + 1000]))
                    .values(
                        state=MessageState.DELIVERED,
                        delivered_at=now,
                        leased_until=None,
                        last_error=None,
                    )
                )
            ids = [c.message.id for c in outcome.released]
            for start in range(0, len(ids), 1000):
                session.execute(
                    update(m)
                    .where(m.id.in_(ids[start : start + 1000]))
                    .values(leased_until=None, attempts=m.attempts - 1)
                )
            for claimed, error in outcome.failed:
                max_attempts = self._targets[claimed.target_id][1]
                values: dict[str, object] = {"leased_until": None, "last_error": error}
                if claimed.attempts >= max_attempts:
                    values["state"] = MessageState.DEAD
                    dead += 1
                else:
                    wait = backoff(
                        claimed.attempts,
                        base=self.settings.delivery_backoff_seconds,
                        cap=self.settings.delivery_max_backoff_seconds,
                    )
                    values["next_attempt_at"] = now + dt.timedelta(seconds=wait)
                session.execute(update(m).where(m.id == claimed.message.id).values(**values))
            if dead:
                outbox.dead_letter_findings(session)
        for claimed in outcome.delivered:
            name = self._targets[claimed.target_id][0]
            age = (now - claimed.message.created_at).total_seconds()
            DELIVERY_ACK_SECONDS.labels(target=name).observe(age)
        if dead:
            log.error("%d outbox message(s) dead-lettered", dead)
        result.delivered += len(outcome.delivered)
        result.failed += len(outcome.failed)
        result.dead += dead
        result.released += len(outcome.released)

    # -- in the background -------------------------------------------------

    def start(self) -> Deliverer:
        self._thread = self._loop.start(self._run)
        return self

    def notify(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._loop.beat()
            try:
                done = self.deliver_once()
            except Exception:
                log.exception("outbox delivery round failed")
                done = Round()
            if done.claimed:
                continue
            self._wake.wait(self.settings.delivery_poll_seconds)
            self._wake.clear()

    def stop(self, timeout: float = 30) -> None:
        self._loop.close()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._unsubscribe()
        self._pool.shutdown(wait=True)
        for _, sender in self._senders.values():
            sender.close()
        self._senders.clear()
