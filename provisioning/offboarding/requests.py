"""Offboarding requests: find the person, remove every access at once or on time, reinstate.

An immediate offboarding marks the user offboarded and revokes every grant
in the transaction that records the request (through
:mod:`provisioning.people.lifecycle`); from that commit the person has no
access (invariant 2 of docs/architecture.md), and stays without it whatever SCIM or Okta
later say, because the engine grants nothing to an offboarded user, until an
admin reinstates them. A future-dated one is executed by the ``offboardings``
job when due (and caught up if the job was down then); it can be cancelled
until it runs. An ``Idempotency-Key`` makes a repeated request return the
first one's record with no second effect.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning import text
from provisioning.audit.log import Entry, Origin, record
from provisioning.database import utcnow
from provisioning.delivery import outbox
from provisioning.entitlements import engine
from provisioning.identity.models import User
from provisioning.offboarding.models import Offboarding, OffboardingState
from provisioning.offboarding.records import revoked_by, tell
from provisioning.people import lifecycle

IDENTIFIERS = {
    "userName": User.user_name_key,
    "externalId": User.external_id,
    "employeeNumber": User.employee_number,
}


class OffboardingError(ValueError):
    """The request cannot be carried out as asked; nothing was recorded."""


class UnknownPerson(OffboardingError):
    pass


class AmbiguousPerson(OffboardingError):
    def __init__(self, message: str, candidates: list[dict[str, str | None]]) -> None:
        super().__init__(message)
        self.candidates = candidates


def find_person(session: Session, identified_by: str, identifier: str) -> User:
    """The one current user the identifier names."""
    column = IDENTIFIERS.get(identified_by)
    if column is None:
        raise OffboardingError(f"identify the person by one of {', '.join(IDENTIFIERS)}")
    value = text.fold(identifier) if identified_by == "userName" else identifier
    users = session.scalars(
        select(User).where(column == value, User.deleted_at.is_(None)).order_by(User.user_name)
    ).all()
    if not users:
        raise UnknownPerson(f"no user with {identified_by} {identifier!r}")
    if len(users) > 1:
        raise AmbiguousPerson(
            f"{len(users)} users have {identified_by} {identifier!r}",
            [
                {"id": str(u.id), "userName": u.user_name, "externalId": u.external_id}
                for u in users
            ],
        )
    return users[0]


@dataclass(frozen=True)
class Outcome:
    offboarding: Offboarding
    replayed: bool = False  # the Idempotency-Key was seen before: nothing was done again
    effective_now: bool = False  # a past effective time was treated as now


def request(
    session: Session,
    origin: Origin,
    *,
    identified_by: str,
    identifier: str,
    reason: str,
    ticket: str | None = None,
    effective_at: dt.datetime | None = None,
    idempotency_key: str | None = None,
) -> Outcome:
    """Record an offboarding; carry it out now unless it is dated in the future."""
    if idempotency_key:
        earlier = session.scalar(
            select(Offboarding).where(Offboarding.idempotency_key == idempotency_key)
        )
        if earlier is not None:
            return Outcome(earlier, replayed=True)
    if not reason or not reason.strip():
        raise OffboardingError("a reason is required")
    user = find_person(session, identified_by, identifier)
    now = utcnow()
    effective_now = effective_at is not None and effective_at <= now
    offboarding = Offboarding(
        user_id=user.id,
        identified_by=identified_by,
        identifier=identifier,
        reason=reason.strip(),
        ticket=ticket,
        source=str(origin.source),
        requested_by=origin.actor,
        requested_at=now,
        effective_at=now if effective_at is None or effective_now else effective_at,
        state=OffboardingState.SCHEDULED,
        revoked=[],
        idempotency_key=idempotency_key or None,
    )
    session.add(offboarding)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "offboarding.requested",
                "offboarding",
                str(offboarding.id),
                user_id=user.id,
                reason=offboarding.reason,
                after={
                    "effective_at": offboarding.effective_at,
                    "ticket": ticket,
                    "identified_by": identified_by,
                },
            )
        ],
    )
    if offboarding.effective_at <= now:
        execute(session, origin, offboarding)
    return Outcome(offboarding, effective_now=effective_now)


def of_person(session: Session, user_id: uuid.UUID, *, limit: int = 5) -> list[Offboarding]:
    """A person's offboardings, the latest first."""
    return list(
        session.scalars(
            select(Offboarding)
            .where(Offboarding.user_id == user_id)
            .order_by(Offboarding.requested_at.desc(), Offboarding.id.desc())
            .limit(limit)
        )
    )


def execute(session: Session, origin: Origin, offboarding: Offboarding) -> engine.Diff:
    """Mark the person offboarded and revoke every grant, in this transaction."""
    user = session.get(User, offboarding.user_id)
    now = utcnow()
    diff = lifecycle.offboard(session, origin, user, now)
    offboarding.revoked = revoked_by(session, diff)
    offboarding.state, offboarding.executed_at = OffboardingState.DONE, now
    session.flush()
    offboarding.outbox_ids = diff.messages + tell(session, "user.offboarded", user, offboarding)
    record(
        session,
        origin,
        [
            Entry(
                "user.offboarded",
                "user",
                str(user.id),
                user_id=user.id,
                reason=offboarding.reason,
                after={"offboarding": offboarding.id, "revoked": len(diff.revoked)},
            )
        ],
    )
    return diff


def execute_due(session: Session, origin: Origin) -> dict[str, int]:
    """Carry out every scheduled offboarding whose time has come (late ones included)."""
    due = session.scalars(
        select(Offboarding)
        .where(
            Offboarding.state == OffboardingState.SCHEDULED,
            Offboarding.effective_at <= utcnow(),
        )
        .order_by(Offboarding.effective_at)
    ).all()
    revoked = sum(len(execute(session, origin, o).revoked) for o in due)
    return {"executed": len(due), "revoked": revoked}


def cancel(session: Session, origin: Origin, offboarding: Offboarding, reason: str) -> None:
    if offboarding.state != OffboardingState.SCHEDULED:
        raise OffboardingError(f"offboarding {offboarding.id} is {offboarding.state}")
    offboarding.state, offboarding.cancelled_at = OffboardingState.CANCELLED, utcnow()
    record(
        session,
        origin,
        [
            Entry(
                "offboarding.cancelled",
                "offboarding",
                str(offboarding.id),
                user_id=offboarding.user_id,
                reason=reason,
            )
        ],
    )


def reinstate(session: Session, origin: Origin, user: User, reason: str) -> engine.Diff:
    """Lift an offboarding: the person's access is derived again from their groups."""
    if user.offboarded_at is None:
        raise OffboardingError(f"user {user.user_name} is not offboarded")
    if not reason or not reason.strip():
        raise OffboardingError("a reason is required")
    diff = lifecycle.reinstate(session, origin, user, reason.strip())
    outbox.enqueue(session, [outbox.Event("user.reinstated", user.id, {"reason": reason.strip()})])
    return diff
