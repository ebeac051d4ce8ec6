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
   Whatever fails is a failed attempt: an answer without a 2xx, a network
   error, a sender that could not be built (its module missing, a URL its
   client refuses) or that raised. Each is logged once as a warning and
   counted in ``delivery_errors_total`` by target and kind.
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

from provisioning import correlation, liveness
from provisioning.database import Database, chunked, utcnow
from provisioning.delivery import outbox
from provisioning.delivery.egress import Egress
from provisioning.delivery.message import DeliveryFailed, Failure, Message
from provisioning.delivery.models import MessageState, OutboxMessage, Target, TargetKind
from provisioning.metrics import DELIVERY_ACK_SECONDS, DELIVERY_ATTEMPTS, DELIVERY_ERRORS
from provisioning.settings import Settings

log = logging.getLogger(__name__)


class Sender(Protocol):
    def send(self, message: Message) -> None: ...

    def close(self) -> None: ...


def sender_for(
    target: Target, *, timeout: float, egress: Egress, callback_secret: str | None = None
) -> Sender:
    """The target's sender; imported here, so that a sender that cannot even be imported
    fails its target's attempts instead of the worker."""
    if target.kind == TargetKind.WEBHOOK:
        from provisioning.delivery.webhook import WebhookSender

        return WebhookSender(target.url, target.secret, timeout=timeout, egress=egress)
    if target.kind == TargetKind.CALLBACK:
        from provisioning.delivery.callbacks import CallbackSender

        return CallbackSender(callback_secret, timeout=timeout, egress=egress)
    from provisioning.delivery.outbound_scim import ScimSender

    return ScimSender(target.url, target.secret, timeout=timeout, egress=egress)


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


def summary(exc: BaseException) -> str:
    """An unexpected error in a line: its type and the first line of its message."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text.splitlines()[0][:300]}" if text else name


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
        self.egress = Egress(settings.delivery_allowed_network_list)
        self._senders: dict[int, tuple[int, Sender]] = {}  # id -> (target version, sender)
        self._unbuilt: dict[int, BaseException] = {}  # id -> why its sender cannot be built
        self._targets: dict[int, tuple[str, int]] = {}  # id -> (name, max_attempts)
        self._traced: set[tuple[int, str]] = set()  # (target, error type) logged with a traceback
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
        chains, targets = self._claim()
        result = Round(claimed=sum(len(c) for c in chains))
        if not chains:
            return result
        self._refresh_senders(targets)
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

    def _claim(self) -> tuple[list[list[Claimed]], list[Target]]:
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
            return [], []
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
                return [], []
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
                    m.request_id,
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
                    message = Message(*row[:6], request_id=row.request_id)
                    chain.append(Claimed(message, row.target_id, row.attempts + 1))
            claimed = [c.message.id for chain in chains.values() for c in chain]
            for chunk in chunked(claimed):
                session.execute(
                    update(m)
                    .where(m.id.in_(chunk))
                    .values(leased_until=lease, attempts=m.attempts + 1)
                )
            ids = {target for target, _ in chains}
            targets = list(session.scalars(select(Target).where(Target.id.in_(ids))))
        return list(chains.values()), targets

    def _refresh_senders(self, targets: list[Target]) -> None:
        """A sender per target, built again when the target changed (outside any transaction)."""
        for target in targets:
            self._targets[target.id] = (target.name, target.max_attempts)
            held = self._senders.get(target.id)
            if held is not None and held[0] == target.version:
                continue
            if held is not None:
                del self._senders[target.id]
                held[1].close()
            try:
                sender = sender_for(
                    target,
                    timeout=self.settings.delivery_timeout_seconds,
                    egress=self.egress,
                    callback_secret=self.settings.callback_secret,
                )
            except Exception as exc:  # tried again next round; each message's attempt fails
                self._unbuilt[target.id] = exc
            else:
                self._unbuilt.pop(target.id, None)
                self._senders[target.id] = (target.version, sender)

    def _send_chain(self, chain: list[Claimed]) -> _Outcome:
        """Send one chain in order, up to its first failure; never raises."""
        outcome = _Outcome()
        target_id = chain[0].target_id
        name = self._targets[target_id][0]
        held = self._senders.get(target_id)
        for n, claimed in enumerate(chain):
            if self._stop.is_set():  # stopping: what was not sent yet goes back at once
                outcome.released += chain[n:]
                break
            if held is None:  # its sender could not be built: the head's attempt fails
                unexpected = self._unbuilt[target_id]
                kind, error = Failure.SENDER_ERROR, summary(unexpected)
            else:
                try:
                    with correlation.in_force(claimed.message.request_id):
                        held[1].send(claimed.message)
                except DeliveryFailed as exc:
                    kind, error, unexpected = exc.kind, str(exc), None
                except Exception as exc:  # the sender's own failure loses nothing either
                    kind, error, unexpected = Failure.SENDER_ERROR, summary(exc), exc
                else:
                    outcome.delivered.append(claimed)
                    DELIVERY_ATTEMPTS.labels(target=name, outcome="delivered").inc()
                    continue
            self._failed(target_id, claimed, kind, error, unexpected)
            outcome.failed.append((claimed, error[:2000]))
            outcome.released += chain[n + 1 :]
            break
        return outcome

    def _failed(
        self,
        target_id: int,
        claimed: Claimed,
        kind: Failure,
        error: str,
        unexpected: BaseException | None,
    ) -> None:
        """One warning per failed attempt; an unexpected error's traceback once per target."""
        name, max_attempts = self._targets[target_id]
        DELIVERY_ATTEMPTS.labels(target=name, outcome="failed").inc()
        DELIVERY_ERRORS.labels(target=name, kind=str(kind)).inc()
        trace = None
        if unexpected is not None and (target_id, type(unexpected).__name__) not in self._traced:
            self._traced.add((target_id, type(unexpected).__name__))
            trace = unexpected
        log.warning(
            "delivery to target %r failed (%s), message %s, attempt %d of %d: %s",
            name,
            kind,
            claimed.message.id,
            claimed.attempts,
            max_attempts,
            error,
            exc_info=trace,
            extra={"request_id": claimed.message.request_id},
        )

    def _settle(self, outcome: _Outcome, result: Round) -> None:
        now = utcnow()
        m = OutboxMessage
        dead = 0
        with self.database.transaction() as session:
            ids = [c.message.id for c in outcome.delivered]
            for chunk in chunked(ids):
                session.execute(
                    update(m)
                    .where(m.id.in_(chunk))
                    .values(
                        state=MessageState.DELIVERED,
                        delivered_at=now,
                        leased_until=None,
                        last_error=None,
                    )
                )
            ids = [c.message.id for c in outcome.released]
            for chunk in chunked(ids):
                session.execute(
                    update(m)
                    .where(m.id.in_(chunk))
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

    def halt(self) -> None:
        """Start no new round; the sends under way finish, the rest of the claims go back."""
        self._loop.close()
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float = 30) -> None:
        self.halt()
        if self._thread is not None:
            self._thread.join(timeout)
        self._unsubscribe()
        self._pool.shutdown(wait=True)
        for _, sender in self._senders.values():
            sender.close()
        self._senders.clear()
