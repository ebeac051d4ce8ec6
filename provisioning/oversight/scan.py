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
  (or only ones an access review withdrew): drift the engine would remove.
- ``separation_violation`` (high): someone holds both sides of a
  separation-of-duties rule without a live exemption (subject ``RULE:USER``);
  resolved when either grant goes or an exemption covers it.
- ``reassessment_overdue``, ``unreviewed_third_party``,
  ``unassessed_regulated``: an enabled connector past its reassessment date,
  or enabled against a governance guard (possible only by editing the
  database behind the service's back).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, String, and_, cast, func, literal, or_, select, union_all, update
from sqlalchemy.orm import Session

from provisioning.audit.log import Origin, Source
from provisioning.connectors import governance
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.entitlements import engine, separation, sources
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
from provisioning.okta.models import RunStatus, SyncRun
from provisioning.oversight.findings import observe
from provisioning.oversight.models import Finding, FindingKind, FindingState, Severity
from provisioning.types import json_object

DEFAULT_DORMANT_DAYS = 90
ORIGIN = Origin(actor="job:stale-scan", source=Source.JOB)


def scan(session: Session, *, dormant_days: int = DEFAULT_DORMANT_DAYS) -> dict[str, Any]:
    """Run every check, remediate what must never exist, and bring findings up to date."""
    now = utcnow()
    counts: dict[str, Any] = {"inactive_holder": _inactive_holders(session)}
    counts["dormant_grant"] = observe(
        session,
        FindingKind.DORMANT_GRANT,
        Severity.MEDIUM,
        "grant",
        _dormant(session, now, dormant_days),
    )
    counts["orphaned_user"] = observe(
        session, FindingKind.ORPHANED_USER, Severity.HIGH, "user", _orphaned(session)
    )
    counts["unjustified_grant"] = observe(
        session, FindingKind.UNJUSTIFIED_GRANT, Severity.HIGH, "grant", _unjustified(session)
    )
    counts["separation_violation"] = observe(
        session,
        FindingKind.SEPARATION_VIOLATION,
        Severity.HIGH,
        separation.SUBJECT_TYPE,
        _separation(session),
    )
    for kind, pairs in _connectors(session, now).items():
        counts[str(kind)] = observe(session, kind, Severity.HIGH, "connector", pairs)
    return counts


def _separation(session: Session) -> tuple[Select, ...]:
    """Each (rule, person) breaking a separation-of-duties rule, as findings' subjects
    (``RULE:USER``) with their evidence: a query per rule, built and written by the
    database (the intersections and the people's names never leave it)."""
    dialect = session.bind.dialect.name
    parts = []
    for rule, users in separation.violation_sets(session):
        parts.append(
            select(
                (literal(f"{rule.id}:") + _uuid_text(dialect, users.c.user_id)).label("subject_id"),
                json_object(
                    dialect,
                    rule=literal(rule.name),
                    owner=literal(rule.owner),
                    user=User.user_name,
                ).label("evidence"),
            ).join_from(users, User, User.id == users.c.user_id)
        )
    return tuple(parts)


def _uuid_text(dialect: str, column: Any) -> Any:
    """A UUID column as its canonical text (``str(uuid)``): PostgreSQL's cast; on SQLite,
    where it is stored as 32 hex digits, the same digits with their four dashes."""
    if dialect == "postgresql":
        return cast(column, String)
    pieces = [func.substr(column, start, size) for start, size in _UUID_GROUPS]
    text = pieces[0]
    for piece in pieces[1:]:
        text = text + "-" + piece
    return func.lower(text)


_UUID_GROUPS = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))


def _inactive_holders(session: Session) -> dict[str, int]:
    # The few users not eligible first, then their grants: put as a join filter, SQLite
    # would walk every live grant and look its holder up.
    ineligible = select(User.id).where(~User.eligible)
    held = session.execute(
        select(User.id, User.user_name, User.state, func.count(Grant.id))
        .join(Grant, Grant.user_id == User.id)
        .where(Grant.revoked_at.is_(None), User.id.in_(ineligible))
        .group_by(User.id)  # the key: the user's other columns depend on it
    ).all()
    pairs = [
        (str(user_id), {"user_name": user_name, "live_grants": count, "state": str(state)})
        for user_id, user_name, state, count in held
    ]
    counts = observe(session, FindingKind.INACTIVE_HOLDER, Severity.CRITICAL, "user", pairs)
    if held:
        diff = engine.apply(session, engine.Affected.users(*(row[0] for row in held)), ORIGIN)
        counts["revoked"] = len(diff.revoked)
        session.execute(
            update(Finding)
            .where(
                Finding.kind == FindingKind.INACTIVE_HOLDER,
                Finding.state == FindingState.OPEN,
                Finding.subject_id.in_([subject for subject, _ in pairs]),
            )
            .values(
                state=FindingState.RESOLVED,
                resolved_at=utcnow(),
                decided_by=ORIGIN.actor,
                decision_reason="revoked automatically",
                # This scan saw them: its time, until now their kind's, is kept in the row.
                recorded_last_seen=Finding.last_seen.expression,
            )
            .execution_options(synchronize_session=False)
        )
    return counts


def _dormant(session: Session, now: dt.datetime, default_days: int) -> Select:
    """Live grants of eligible users unused for the connector's threshold (or never, since).

    One pass over the live grants whatever the thresholds, a grant's connector
    matched to its threshold by value (lists of connector ids, one per
    threshold, made SQLite probe every holder's grants once per connector).
    """
    own = Connector.dormant_after_days
    thresholds = sorted({value or default_days for value in session.scalars(select(own))})
    unused = []
    for threshold in thresholds or [default_days]:
        cutoff = now - dt.timedelta(days=threshold)
        condition = or_(
            Grant.last_used_at < cutoff,
            and_(Grant.last_used_at.is_(None), Grant.granted_at < cutoff),
        )
        if len(thresholds) > 1:
            # The connectors of this threshold, by plain column tests PostgreSQL can estimate.
            if threshold == default_days:
                theirs = or_(own.is_(None), own.in_([0, default_days]))
            else:
                theirs = own == threshold
            condition = and_(theirs, condition)
        unused.append(condition)
    days = func.coalesce(func.nullif(own, 0), default_days)
    return (
        select(
            cast(Grant.id, String).label("subject_id"),
            json_object(
                session.bind.dialect.name,
                user=User.user_name,
                connector=Connector.slug,
                last_used_at=Grant.last_used_at,
                granted_at=Grant.granted_at,
                threshold_days=days,
            ).label("evidence"),
        )
        .join(Connector, Connector.id == Grant.connector_id)
        .join(User, User.id == Grant.user_id)
        .where(Grant.revoked_at.is_(None), User.eligible, or_(*unused))
    )


def _orphaned(session: Session) -> list[tuple[str, dict[str, Any]]]:
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
        (str(user_id), {"okta_id": okta_id, "user": user_name, "reconciliation": last_full.id})
        for user_id, okta_id, user_name in users
    ]


def _unjustified(session: Session) -> Select:
    """Live grants of eligible users that no live mapping or exception justifies.

    Two disjoint parts: grants of connectors that may not be granted at all, and
    grants of the others that NOT EXISTS a justification. Kept at the top of
    their WHERE clause (not under an OR), the NOT EXISTS become anti-joins on
    PostgreSQL (hashed, in one pass) and index probes per grant on SQLite. The
    review withdrawal is tested against the justification's own user and
    connector, which equal the grant's, so it stays inside the anti-join.
    """
    grantable = governance.grantable()
    unjustified = [~j for j in sources.justified(Grant.user_id, Grant.connector_id, utcnow())]
    live = (
        select(
            cast(Grant.id, String).label("subject_id"),
            json_object(
                session.bind.dialect.name, user=User.user_name, connector=Connector.slug
            ).label("evidence"),
        )
        .join(Connector, Connector.id == Grant.connector_id)
        .join(User, User.id == Grant.user_id)
        .where(Grant.revoked_at.is_(None), User.eligible)
    )
    # Connectors that may not be granted are few (usually none): their grants by the
    # connector index, not by testing every live grant's connector.
    not_grantable = select(Connector.id).where(~grantable).correlate(None)
    return union_all(
        live.where(Grant.connector_id.in_(not_grantable)),
        live.where(grantable, *unjustified),
    )


def _connectors(
    session: Session, now: dt.datetime
) -> dict[FindingKind, list[tuple[str, dict[str, Any]]]]:
    found: dict[FindingKind, list[tuple[str, dict[str, Any]]]] = {
        FindingKind.REASSESSMENT_OVERDUE: [],
        FindingKind.UNREVIEWED_THIRD_PARTY: [],
        FindingKind.UNASSESSED_REGULATED: [],
    }
    for connector in session.scalars(select(Connector).where(Connector.enabled.is_(True))):
        if connector.reassess_by and connector.reassess_by < now.date():
            found[FindingKind.REASSESSMENT_OVERDUE].append(
                (
                    connector.slug,
                    {"reassess_by": connector.reassess_by.isoformat(), "owner": connector.owner},
                )
            )
        for guard in governance.broken(connector):
            found[FindingKind(guard.name)].append((connector.slug, guard.evidence(connector)))
    return found
