"""Offboarding requests: find the person, remove every access at once or on time, reinstate.

An immediate offboarding marks the user offboarded and revokes every grant
in the transaction that records the request; from that commit the person has
no access (DESIGN invariant 2), and stays without it whatever SCIM or Okta
later say, because the engine grants nothing to an offboarded user, until an
admin reinstates them. A future-dated one is executed by the ``offboardings``
job when due (and caught up if the job was down then); it can be cancelled
until it runs. An ``Idempotency-Key`` makes a repeated request return the
first one's record with no second effect.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning import text
from provisioning.audit.log import Entry, Origin, Source, record
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.delivery import outbox
from provisioning.entitlements import engine
from provisioning.identity.models import User
from provisioning.offboarding.models import Offboarding, OffboardingState

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


def execute(session: Session, origin: Origin, offboarding: Offboarding) -> engine.Diff:
    """Mark the person offboarded and revoke every grant, in this transaction."""
    user = session.get(User, offboarding.user_id)
    now = utcnow()
    if user.offboarded_at is None:
        user.offboarded_at = now
    session.flush()
    diff = engine.apply(session, engine.Affected.users(user.id), origin)
    offboarding.revoked = _revoked(session, diff)
    offboarding.state, offboarding.executed_at = OffboardingState.DONE, now
    session.flush()
    offboarding.outbox_ids = diff.messages + _tell(session, "user.offboarded", user, offboarding)
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
    before = user.offboarded_at
    user.offboarded_at = None
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "user.reinstated",
                "user",
                str(user.id),
                user_id=user.id,
                reason=reason.strip(),
                before={"offboarded_at": before},
            )
        ],
    )
    diff = engine.apply(session, engine.Affected.users(user.id), origin)
    outbox.enqueue(session, [outbox.Event("user.reinstated", user.id, {"reason": reason.strip()})])
    return diff


def _revoked(session: Session, diff: engine.Diff) -> list[dict[str, object]]:
    slugs = dict(session.execute(select(Connector.id, Connector.slug)).all())
    return [
        {"grant_id": c.grant_id, "connector": slugs[c.connector_id], "access_level": c.access_level}
        for c in diff.revoked
    ]


def _tell(session: Session, kind: str, user: User, offboarding: Offboarding) -> list[int]:
    """Enqueue the user event of an offboarding for every target; return the message ids."""
    data = {
        "offboarding": {
            "id": offboarding.id,
            "source": offboarding.source,
            "reason": offboarding.reason,
            "ticket": offboarding.ticket,
            "revoked": len(offboarding.revoked),
        }
    }
    return outbox.enqueue(session, [outbox.Event(kind, user.id, data)])


# Deactivations from the IdP leave a record of what they revoked, under these sources.
_IDP_SOURCES = {
    Source.OKTA_HOOK: "okta",
    Source.OKTA_SYNC: "okta",
    Source.SCIM: "scim",
}


def record_deactivation(
    session: Session, origin: Origin, user: User, diff: engine.Diff
) -> Offboarding | None:
    """The offboarding record of an Okta or SCIM deactivation: proof of what it revoked.

    Not sticky: the IdP's own reactivation restores access (offboarded_at is
    left alone), unlike an HR or admin offboarding.
    """
    source = _IDP_SOURCES.get(origin.source)
    if source is None:
        return None
    now = utcnow()
    by_okta_id = user.external_id is not None
    offboarding = Offboarding(
        user_id=user.id,
        identified_by="externalId" if by_okta_id else "userName",
        identifier=user.external_id if by_okta_id else user.user_name,
        reason=origin.reason or f"deactivated through {source}",
        source=source,
        requested_by=origin.actor,
        requested_at=now,
        effective_at=now,
        executed_at=now,
        state=OffboardingState.DONE,
        revoked=_revoked(session, diff),
    )
    session.add(offboarding)
    session.flush()
    offboarding.outbox_ids = diff.messages + _tell(session, "user.offboarded", user, offboarding)
    return offboarding
