"""Carrying out a mass revocation the brake held, once an admin confirms it."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.database import utcnow
from provisioning.entitlements import engine
from provisioning.entitlements.models import HoldState, RevocationHold


def confirm(session: Session, origin: Origin, hold: RevocationHold, reason: str) -> engine.Diff:
    """Carry out a hold: the engine revokes what is still unjustified for its users now."""
    if hold.state != HoldState.HELD:
        raise ValueError(f"hold {hold.id} is {hold.state}")
    hold.state, hold.decided_by, hold.decided_at = HoldState.CONFIRMED, origin.actor, utcnow()
    users = [uuid.UUID(u) for u in hold.user_ids]
    diff = engine.Diff()
    for start in range(0, len(users), 5000):
        diff.extend(
            engine.apply(session, engine.Affected.users(*users[start : start + 5000]), origin)
        )
    hold.revoked = len(diff.revoked)
    record(
        session,
        origin,
        [
            Entry(
                "revocations.confirmed",
                "revocation_hold",
                str(hold.id),
                reason=reason,
                after={"revoked": hold.revoked, "held": hold.revocations},
            )
        ],
    )
    return diff
