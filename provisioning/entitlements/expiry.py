"""Expiry: time-bound mappings and manual exceptions stop justifying access on time.

The engine already ignores an expired mapping or exception; this finds the
users still holding a grant that only such a one justified, and applies the
engine to them (revocation audited like any other).
"""

from __future__ import annotations

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from provisioning.audit.log import Origin
from provisioning.database import utcnow
from provisioning.entitlements import engine
from provisioning.entitlements.models import Grant, ManualException, Mapping
from provisioning.identity.models import Membership


def expire(session: Session, origin: Origin) -> dict[str, int]:
    """Apply the engine to everyone an expired mapping or exception may still be granting."""
    now = utcnow()
    live = (Grant.revoked_at.is_(None),)
    by_mapping = session.scalars(
        select(Membership.user_id)
        .join(Mapping, Mapping.group_id == Membership.group_id)
        .where(
            Mapping.expires_at <= now,
            exists().where(
                and_(
                    Grant.user_id == Membership.user_id,
                    Grant.connector_id == Mapping.connector_id,
                    *live,
                )
            ),
        )
        .distinct()
    ).all()
    by_exception = session.scalars(
        select(ManualException.user_id)
        .where(
            ManualException.expires_at <= now,
            ManualException.revoked_at.is_(None),
            exists().where(
                and_(
                    Grant.user_id == ManualException.user_id,
                    Grant.connector_id == ManualException.connector_id,
                    *live,
                )
            ),
        )
        .distinct()
    ).all()
    users = sorted(set(by_mapping) | set(by_exception))
    if not users:
        return {"users": 0, "revoked": 0, "updated": 0}
    diff = engine.apply(session, engine.Affected.users(*users), origin)
    return {"users": len(users), "revoked": len(diff.revoked), "updated": len(diff.updated)}
