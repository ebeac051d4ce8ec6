"""Dormant-access remediation: targets told when a dormant grant is found, revoked after grace.

Off unless a connector sets ``dormant_grace_days``. For such a connector,
after each stale-access scan:

- every ``dormant_grant`` finding the scan just opened is announced to the
  targets as a ``grant.dormant`` event naming when it will be revoked;
- every one still open ``dormant_grace_days`` after it opened is revoked: a
  withdrawal of the user's access to the connector is recorded (the same fact
  an access review's revocation writes, so the engine keeps it revoked until a
  newer mapping or exception grants it again), the engine runs for those
  users, and the finding is resolved saying why. All of it is audited.

A grant used again in the meantime stops being dormant, its finding resolves
at the next scan, and nothing is revoked. A suppressed finding is never acted on.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, cast, insert, select, update
from sqlalchemy.orm import Session

from provisioning.audit.log import Origin
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.delivery import outbox
from provisioning.entitlements import engine
from provisioning.entitlements.models import Grant, ReviewRevocation
from provisioning.oversight.models import Finding, FindingKind, FindingState

_BATCH = 5000


def _open_dormant(grace: dict[int, int]):
    return (
        select(
            Finding.id,
            Finding.first_seen,
            Grant.id.label("grant_id"),
            Grant.user_id,
            Grant.connector_id,
            Grant.access_level,
            Grant.last_used_at,
            Connector.slug,
        )
        .join(Grant, cast(Grant.id, String) == Finding.subject_id)
        .join(Connector, Connector.id == Grant.connector_id)
        .where(
            Finding.kind == FindingKind.DORMANT_GRANT,
            Finding.state == FindingState.OPEN,
            Finding.subject_type == "grant",
            Grant.revoked_at.is_(None),
            Grant.connector_id.in_(list(grace)),
        )
    )


def remediate(session: Session, origin: Origin, *, opened_since: dt.datetime) -> dict[str, Any]:
    """Announce dormant findings opened since ``opened_since``; revoke those past grace."""
    grace = dict(
        session.execute(
            select(Connector.id, Connector.dormant_grace_days).where(
                Connector.dormant_grace_days.is_not(None)
            )
        ).all()
    )
    if not grace:
        return {"announced": 0, "revoked": 0}
    now = utcnow()
    announced: list[outbox.Event] = []
    due: list[Any] = []
    for row in session.execute(_open_dormant(grace)):
        revoke_at = row.first_seen + dt.timedelta(days=grace[row.connector_id])
        if revoke_at <= now:
            due.append(row)
        elif row.first_seen >= opened_since:
            grant = {
                "id": row.grant_id,
                "connector": row.slug,
                "connector_id": row.connector_id,
                "access_level": str(row.access_level),
                "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
            }
            data = {"grant": grant, "finding": row.id, "revoke_at": revoke_at.isoformat()}
            announced.append(outbox.Event("grant.dormant", row.user_id, data, row.connector_id))
    outbox.enqueue(session, announced)
    revoked = 0
    for start in range(0, len(due), 1000):
        session.execute(
            insert(ReviewRevocation),
            [
                {
                    "user_id": row.user_id,
                    "connector_id": row.connector_id,
                    "item_id": None,
                    "revoked_at": now,
                    "revoked_by": origin.actor,
                }
                for row in due[start : start + 1000]
            ],
        )
    because = Origin(origin.actor, origin.source, reason="dormant past the connector's grace")
    users = sorted({row.user_id for row in due})
    for start in range(0, len(users), _BATCH):
        diff = engine.apply(session, engine.Affected.users(*users[start : start + _BATCH]), because)
        revoked += len(diff.revoked)
    for start in range(0, len(due), 1000):
        session.execute(
            update(Finding)
            .where(Finding.id.in_([row.id for row in due[start : start + 1000]]))
            .values(
                state=FindingState.RESOLVED,
                resolved_at=now,
                # Seen by the scan this follows, in the same transaction.
                recorded_last_seen=now,
                decided_by=origin.actor,
                decision_reason="revoked automatically: dormant past the connector's grace",
            )
            .execution_options(synchronize_session=False)
        )
    return {"announced": len(announced), "revoked": revoked}
