"""The event hook inbox: deliveries committed before they are acknowledged, applied after.

A delivery is parsed and stored in one transaction (:func:`receive`); only
then does Okta get its answer. Only the envelope is checked then: what is
wrong with one event is that event's business, never its neighbours'.
Applying happens afterwards (:func:`process_pending`), one delivery per
transaction and each event in its own savepoint
(:func:`provisioning.okta.events.take`): an event that cannot be applied is
parked with its reason and the rest of the delivery is applied. A crash at
any point leaves the delivery pending, and it is applied on the next pass.
A delivery the database itself fails on stays pending with its error and is
retried with capped exponential backoff; once its retries are spent, the
events the database still refuses are parked, so no delivery is stuck and
none is ever dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisioning import liveness
from provisioning.audit.log import Source
from provisioning.database import Database, utcnow
from provisioning.metrics import OKTA_EVENTS, OKTA_EVENTS_CLAMPED
from provisioning.okta import events
from provisioning.okta.models import DeliveryState, EventOutcome, InboxDelivery
from provisioning.settings import DEFAULTS, Settings

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300
# Failed passes after which events the database still refuses are parked (about 20 min).
DATABASE_RETRIES = 10


class EnvelopeError(ValueError):
    """The delivery is not a usable Okta event hook envelope."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # Each event is taken on its own when applied (events.take), whatever it holds.
    events: list[Any]


class Envelope(BaseModel):
    """An event hook delivery (Okta's ``com.okta.event_hook`` envelope)."""

    model_config = ConfigDict(extra="ignore")
    eventId: Annotated[str, Field(max_length=128), AfterValidator(events.kept_text)] | None = None
    data: _Data


def parse(body: bytes) -> Envelope:
    """The envelope, or :class:`EnvelopeError` saying what is wrong with it."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise EnvelopeError("body is not a JSON object")
    if not isinstance(document.get("data"), dict) or "events" not in document["data"]:
        raise EnvelopeError("missing data.events")
    try:
        envelope = Envelope.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise EnvelopeError(f"{where}: {first['msg']}") from None
    return envelope


def reject(database: Database, body: bytes, reason: str) -> None:
    """Keep a malformed delivery, rejected, for inspection; it is never applied.

    Its text is the body as UTF-8, what is not UTF-8 and NUL (which PostgreSQL's text
    cannot hold) replaced by U+FFFD.
    """
    with database.transaction() as session:
        session.add(
            InboxDelivery(
                body=body.decode("utf-8", "replace").replace("\x00", "\ufffd"),
                state=DeliveryState.REJECTED,
                last_error=reason,
            )
        )


@dataclass
class Receipt:
    delivery_id: int | None
    duplicate: bool = False
    events: int = 0


def receive(database: Database, body: bytes) -> Receipt:
    """Store a delivery durably; raise :class:`EnvelopeError` (after keeping it) if malformed.

    A delivery whose ``eventId`` was stored before is a retry: nothing new is
    stored and the receipt says so.
    """
    try:
        envelope = parse(body)
    except EnvelopeError as exc:
        reject(database, body, str(exc))
        raise
    try:
        with database.transaction() as session:
            row = InboxDelivery(
                delivery_id=envelope.eventId,
                body=body.decode(),
                state=DeliveryState.PENDING,
                event_count=len(envelope.data.events),
            )
            session.add(row)
            session.flush()
            return Receipt(row.id, events=row.event_count)
    except IntegrityError:
        return Receipt(None, duplicate=True)


@dataclass
class Progress:
    """What a processing pass did."""

    deliveries: int = 0
    failed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _claim(session: Session, now: dt.datetime, delivery_id: int | None) -> InboxDelivery | None:
    query = (
        select(InboxDelivery)
        .where(
            InboxDelivery.state == DeliveryState.PENDING,
            (InboxDelivery.next_attempt_at.is_(None)) | (InboxDelivery.next_attempt_at <= now),
        )
        .order_by(InboxDelivery.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if delivery_id is not None:
        query = query.where(InboxDelivery.id == delivery_id)
    return session.scalar(query)


def process_next(
    database: Database,
    progress: Progress,
    delivery_id: int | None = None,
    settings: Settings = DEFAULTS,
) -> bool:
    """Apply the oldest due delivery (or the one named); False when none was due."""
    now = utcnow()
    claimed: int | None = None
    try:
        with database.transaction() as session:
            delivery = _claim(session, now, delivery_id)
            if delivery is None:
                return False
            claimed = delivery.id
            taken = [
                events.take(
                    session,
                    raw,
                    Source.OKTA_HOOK,
                    received_at=delivery.received_at,
                    delivery_id=delivery.id,
                    park_database_errors=delivery.attempts >= DATABASE_RETRIES,
                    settings=settings,
                )
                for raw in json.loads(delivery.body)["data"]["events"]
            ]
            outcomes = Counter(t.name for t in taken)
            clamped = sum(t.clamped for t in taken)
            if clamped:
                outcomes["clamped"] = clamped
            delivery.outcomes = dict(outcomes)
            delivery.state = DeliveryState.PROCESSED
            delivery.processed_at = utcnow()
            delivery.attempts += 1
            delivery.last_error = None
    except Exception as exc:  # the delivery stays pending, with its error, for a retry
        if claimed is None:
            raise
        log.warning("okta delivery %s failed: %s", claimed, exc)
        _postpone(database, claimed, exc)
        progress.failed += 1
        return True
    progress.deliveries += 1
    for one in taken:
        progress.count(one.name)
        OKTA_EVENTS.labels(outcome=one.name).inc()
    if clamped:
        OKTA_EVENTS_CLAMPED.labels(source=str(Source.OKTA_HOOK)).inc(clamped)
    return True


def _postpone(database: Database, delivery_id: int, exc: Exception) -> None:
    with database.transaction() as session:
        delivery = session.get(InboxDelivery, delivery_id)
        delivery.attempts += 1
        delay = min(2**delivery.attempts, MAX_BACKOFF_SECONDS)
        delivery.next_attempt_at = utcnow() + dt.timedelta(seconds=delay)
        delivery.last_error = f"{type(exc).__name__}: {exc}"[:2000]


def process_pending(
    database: Database, *, limit: int | None = None, settings: Settings = DEFAULTS
) -> Progress:
    """Apply due deliveries, oldest first, until none is due (or ``limit`` is reached)."""
    progress = Progress()
    while limit is None or progress.deliveries + progress.failed < limit:
        if not process_next(database, progress, settings=settings):
            break
    return progress


def depth(session: Session) -> int:
    """Deliveries stored and not yet applied."""
    return session.scalar(
        select(func.count(InboxDelivery.id)).where(InboxDelivery.state == DeliveryState.PENDING)
    )


class Processor:
    """Applies deliveries in a background thread: at once when told, and on a timer.

    The timer pass picks up retries and anything left by a crash (every
    pending row is applied again on start). A pass applies at most
    ``PASS_LIMIT`` deliveries and the loop beats before each
    (:mod:`provisioning.liveness`); it is stalled after ``STALL_AFTER_SECONDS``.
    """

    PASS_LIMIT = 100
    STALL_AFTER_SECONDS = 120.0

    def __init__(
        self, database: Database, settings: Settings = DEFAULTS, interval: float = 5.0
    ) -> None:
        self.database = database
        self.settings = settings
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._loop = liveness.Loop("okta-inbox", stall_after=self.STALL_AFTER_SECONDS)
        self._thread: threading.Thread | None = None

    def start(self) -> Processor:
        self._thread = self._loop.start(self._run)
        return self

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._loop.close()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._loop.beat()
            try:
                done = process_pending(self.database, limit=self.PASS_LIMIT, settings=self.settings)
                if done.deliveries + done.failed >= self.PASS_LIMIT:
                    continue  # more are due: beat, then go on at once
            except Exception:
                log.exception("okta inbox pass failed")
            self._wake.wait(self.interval)
            self._wake.clear()


__all__ = ["EventOutcome", "Processor", "Receipt", "process_pending", "receive"]
