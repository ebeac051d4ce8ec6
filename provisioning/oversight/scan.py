"""The stale-access scan: set-based queries that find access which should not exist.

Kinds (each a finding per subject, resolved by itself when the cause goes):

- ``inactive_holder`` (critical): a live grant held by someone not eligible
  (deactivated, offboarded, deleted). It must never exist: the scan revokes
  it at once through the engine and records the finding as resolved so.
- ``dormant_grant``: not used for N days (the connector's
  ``dormant_after_days``, else the service default of 90), or never used and
  granted more than N days ago. Use is what the decision API records.
- ``orphaned_user``: a user the last successful full reconciliation did not
  find in Okta.
- ``unjustified_grant``: a live grant no mapping or live exception justifies
  (drift the engine would remove).
- ``reassessment_overdue``, ``unreviewed_third_party``,
  ``unassessed_regulated``: an enabled connector past its reassessment date,
  or enabled against a governance guard (possible only by editing the
  database behind the service's back).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from provisioning.audit.log import Origin, Source
from provisioning.connectors.models import (
    Connector,
    DataClassification,
    Publisher,
    ReviewStatus,
)
from provisioning.database import utcnow
from provisioning.entitlements import engine
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
from provisioning.okta.models import RunStatus, SyncRun
from provisioning.oversight.findings import Observation, observe
from provisioning.oversight.models import Finding, FindingKind, FindingState, Severity

DEFAULT_DORMANT_DAYS = 90
ORIGIN = Origin(actor="job:stale-scan", source=Source.JOB)


def scan(session: Session, *, dormant_days: int = DEFAULT_DORMANT_DAYS) -> dict[str, Any]:
    """Run every check, remediate what must never exist, and bring findings up to date."""
    now = utcnow()
    counts: dict[str, Any] = {}
    counts["inactive_holder"] = _inactive_holders(session)
    checks = {
        FindingKind.DORMANT_GRANT: _dormant(session, now, dormant_days),
        FindingKind.ORPHANED_USER: _orphaned(session),
        FindingKind.UNJUSTIFIED_GRANT: _unjustified(session),
        **_connectors(session, now),
    }
    for kind, observations in checks.items():
        counts[str(kind)] = observe(session, [kind], observations)
    return counts


def _inactive_holders(session: Session) -> dict[str, int]:
    held = session.execute(
        select(User.id, User.active, User.offboarded_at, User.deleted_at, func.count(Grant.id))
        .join(Grant, Grant.user_id == User.id)
        .where(Grant.revoked_at.is_(None), ~User.eligible)
        .group_by(User.id, User.active, User.offboarded_at, User.deleted_at)
    ).all()
    observations = [
        Observation(
            FindingKind.INACTIVE_HOLDER,
            Severity.CRITICAL,
            "user",
            str(user_id),
            {
                "live_grants": count,
                "state": "deleted"
                if deleted_at
                else "offboarded"
                if offboarded_at
                else "deactivated",
            },
        )
        for user_id, active, offboarded_at, deleted_at, count in held
    ]
    counts = observe(session, [FindingKind.INACTIVE_HOLDER], observations)
    if held:
        diff = engine.apply(session, engine.Affected.users(*(row[0] for row in held)), ORIGIN)
        counts["revoked"] = len(diff.revoked)
        keys = [o.subject_id for o in observations]
        for finding in session.scalars(
            select(Finding).where(
                Finding.kind == FindingKind.INACTIVE_HOLDER,
                Finding.state == FindingState.OPEN,
                Finding.subject_id.in_(keys),
            )
        ):
            finding.state, finding.resolved_at = FindingState.RESOLVED, utcnow()
            finding.decided_by, finding.decision_reason = ORIGIN.actor, "revoked automatically"
        session.flush()
    return counts


def _dormant(session: Session, now: dt.datetime, default_days: int) -> list[Observation]:
    thresholds: dict[int, list[int]] = {}
    for connector_id, days in session.execute(select(Connector.id, Connector.dormant_after_days)):
        thresholds.setdefault(days or default_days, []).append(connector_id)
    observations = []
    for days, connector_ids in thresholds.items():
        cutoff = now - dt.timedelta(days=days)
        rows = session.execute(
            select(Grant.id, Grant.user_id, Connector.slug, Grant.last_used_at, Grant.granted_at)
            .join(Connector, Connector.id == Grant.connector_id)
            .join(User, User.id == Grant.user_id)
            .where(
                Grant.revoked_at.is_(None),
                User.eligible,
                Grant.connector_id.in_(connector_ids),
                or_(
                    Grant.last_used_at < cutoff,
                    and_(Grant.last_used_at.is_(None), Grant.granted_at < cutoff),
                ),
            )
        )
        observations += [
            Observation(
                FindingKind.DORMANT_GRANT,
                Severity.MEDIUM,
                "grant",
                str(grant_id),
                {
                    "user_id": str(user_id),
                    "connector": slug,
                    "last_used_at": last_used.isoformat() if last_used else None,
                    "granted_at": granted.isoformat(),
                    "threshold_days": days,
                },
            )
            for grant_id, user_id, slug, last_used, granted in rows
        ]
    return observations


def _orphaned(session: Session) -> list[Observation]:
    last_full = session.scalar(
        select(SyncRun)
        .where(
            SyncRun.kind == "reconcile",
            SyncRun.mode == "full",
            SyncRun.status == RunStatus.SUCCEEDED,
            SyncRun.dry_run.is_(False),
        )
        .order_by(SyncRun.started_at.desc())
        .limit(1)
    )
    okta_ids = (last_full.drift or {}).get("orphaned", []) if last_full else []
    if not okta_ids:
        return []
    users = session.execute(
        select(User.id, User.external_id, User.user_name).where(
            User.external_id.in_(okta_ids), User.deleted_at.is_(None)
        )
    )
    return [
        Observation(
            FindingKind.ORPHANED_USER,
            Severity.HIGH,
            "user",
            str(user_id),
            {"okta_id": okta_id, "user_name": user_name, "reconciliation": last_full.id},
        )
        for user_id, okta_id, user_name in users
    ]


def _unjustified(session: Session) -> list[Observation]:
    justified = engine.justifications(engine.Affected.everyone()).subquery()
    rows = session.execute(
        select(Grant.id, Grant.user_id, Connector.slug)
        .join(Connector, Connector.id == Grant.connector_id)
        .join(User, User.id == Grant.user_id)
        .outerjoin(
            justified,
            and_(
                justified.c.user_id == Grant.user_id,
                justified.c.connector_id == Grant.connector_id,
            ),
        )
        .where(Grant.revoked_at.is_(None), User.eligible, justified.c.user_id.is_(None))
    )
    return [
        Observation(
            FindingKind.UNJUSTIFIED_GRANT,
            Severity.HIGH,
            "grant",
            str(grant_id),
            {"user_id": str(user_id), "connector": slug},
        )
        for grant_id, user_id, slug in rows
    ]


def _connectors(session: Session, now: dt.datetime) -> dict[FindingKind, list[Observation]]:
    found: dict[FindingKind, list[Observation]] = {
        FindingKind.REASSESSMENT_OVERDUE: [],
        FindingKind.UNREVIEWED_THIRD_PARTY: [],
        FindingKind.UNASSESSED_REGULATED: [],
    }
    for connector in session.scalars(select(Connector).where(Connector.enabled.is_(True))):
        if connector.reassess_by and connector.reassess_by < now.date():
            found[FindingKind.REASSESSMENT_OVERDUE].append(
                Observation(
                    FindingKind.REASSESSMENT_OVERDUE,
                    Severity.MEDIUM,
                    "connector",
                    connector.slug,
                    {"reassess_by": connector.reassess_by.isoformat(), "owner": connector.owner},
                )
            )
        if (
            connector.publisher == Publisher.THIRD_PARTY
            and connector.security_review != ReviewStatus.APPROVED
        ):
            found[FindingKind.UNREVIEWED_THIRD_PARTY].append(
                Observation(
                    FindingKind.UNREVIEWED_THIRD_PARTY,
                    Severity.HIGH,
                    "connector",
                    connector.slug,
                    {"security_review": str(connector.security_review)},
                )
            )
        if (
            connector.data_classification == DataClassification.REGULATED
            and not connector.compliance_assessment
        ):
            found[FindingKind.UNASSESSED_REGULATED].append(
                Observation(
                    FindingKind.UNASSESSED_REGULATED,
                    Severity.HIGH,
                    "connector",
                    connector.slug,
                    {"data_classification": "regulated"},
                )
            )
    return found
