"""The stale-access scan: every finding kind appears with its cause and goes with it."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from provisioning.api.schemas import FindingOut
from provisioning.audit.models import AuditEvent
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
from provisioning.okta.models import RunStatus, SyncRun
from provisioning.oversight.findings import decide
from provisioning.oversight.models import Finding, FindingKind, FindingScan, FindingState
from provisioning.oversight.scan import scan
from tests.org import Org


def findings(database, kind: FindingKind) -> list[tuple[str, str]]:
    with database.reader() as session:
        rows = session.execute(
            select(Finding.subject_id, Finding.state).where(Finding.kind == kind)
        )
        return sorted((subject, str(state)) for subject, state in rows)


def run_scan(database, **kwargs):
    with database.transaction() as session:
        return scan(session, **kwargs)


@pytest.fixture
def granted(database, origin):
    """Ada holds github through eng-platform."""
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group, github = org.user("ada@example.com"), org.group(), org.connector("github")
        create_mapping(session, origin, group, github, "read")
        org.join(ada, group)
        grant = session.scalar(select(Grant))
    return ada, github, grant


def days_ago(days: float) -> dt.datetime:
    return utcnow() - dt.timedelta(days=days)


def test_dormant_grant_comes_and_goes_with_use(database, granted):
    _ada, _github, grant = granted
    run_scan(database)
    assert findings(database, FindingKind.DORMANT_GRANT) == []
    with database.transaction() as session:
        session.execute(update(Grant).values(granted_at=days_ago(100)))
    run_scan(database)
    assert findings(database, FindingKind.DORMANT_GRANT) == [(str(grant.id), "open")]
    # Scanning again keeps one finding, not two.
    run_scan(database)
    assert len(findings(database, FindingKind.DORMANT_GRANT)) == 1
    used_then_scanned(database)
    assert findings(database, FindingKind.DORMANT_GRANT) == [(str(grant.id), "resolved")]


def test_scan_counts_what_it_opened_kept_and_resolved(database, granted):
    with database.transaction() as session:
        session.execute(update(Grant).values(granted_at=days_ago(100)))
    assert run_scan(database)["dormant_grant"] == {"opened": 1, "still_open": 0, "resolved": 0}
    assert run_scan(database)["dormant_grant"] == {"opened": 0, "still_open": 1, "resolved": 0}
    with database.transaction() as session:
        session.execute(update(Grant).values(last_used_at=days_ago(1)))
    assert run_scan(database)["dormant_grant"] == {"opened": 0, "still_open": 0, "resolved": 1}


def test_dormancy_threshold_per_connector(database, granted):
    _, _github, grant = granted
    with database.transaction() as session:
        session.execute(update(Grant).values(last_used_at=days_ago(20)))
        session.execute(update(Connector).values(dormant_after_days=14))
    run_scan(database)
    assert findings(database, FindingKind.DORMANT_GRANT) == [(str(grant.id), "open")]


def test_each_connector_has_its_own_dormancy_threshold(database, granted, origin):
    ada, _github, grant = granted
    with database.transaction() as session:
        wiki = Org(session, origin).connector("wiki")
        session.add(Grant(user_id=ada.id, connector_id=wiki.id, access_level="read"))
        session.execute(update(Grant).values(last_used_at=days_ago(20)))
        session.execute(
            update(Connector).where(Connector.slug == "github").values(dormant_after_days=14)
        )
    run_scan(database)
    with database.reader() as session:
        (finding,) = session.scalars(
            select(Finding).where(Finding.kind == FindingKind.DORMANT_GRANT)
        ).all()
        assert finding.subject_id == str(grant.id)
        assert finding.evidence["threshold_days"] == 14
    with database.transaction() as session:
        session.execute(update(Grant).values(last_used_at=days_ago(100)))
    run_scan(database)
    with database.reader() as session:
        thresholds = session.scalars(
            select(Finding.evidence).where(
                Finding.kind == FindingKind.DORMANT_GRANT, Finding.state == FindingState.OPEN
            )
        )
        assert sorted(evidence["threshold_days"] for evidence in thresholds) == [14, 90]


def test_access_held_by_an_inactive_user_is_revoked_at_once(database, granted):
    _ada, _, grant = granted
    with database.transaction() as session:
        # Behind the service's back: deactivated without the engine running.
        session.execute(update(User).values(active=False))
    counts = run_scan(database)
    assert counts["inactive_holder"]["revoked"] == 1
    with database.reader() as session:
        assert session.get(Grant, grant.id).revoked_at is not None
        finding = session.scalar(select(Finding).where(Finding.kind == "inactive_holder"))
        assert (finding.severity, finding.state) == ("critical", "resolved")
        assert finding.decision_reason == "revoked automatically"
        revoked = select(AuditEvent).where(AuditEvent.action == "grant.revoked")
        assert session.scalar(revoked).source == "job"


def test_unjustified_grant(database, granted, origin):
    ada, _github, grant = granted
    with database.transaction() as session:
        other = Org(session, origin).connector("wiki")
        session.add(Grant(user_id=ada.id, connector_id=other.id, access_level="read"))
    run_scan(database)
    ((subject, state),) = findings(database, FindingKind.UNJUSTIFIED_GRANT)
    assert state == "open" and subject != str(grant.id)
    with database.transaction() as session:
        session.execute(
            update(Grant).where(Grant.connector_id == other.id).values(revoked_at=utcnow())
        )
    run_scan(database)
    assert findings(database, FindingKind.UNJUSTIFIED_GRANT) == [(subject, "resolved")]


def test_a_grant_of_a_connector_that_may_not_be_granted_is_unjustified(database, granted):
    _ada, _github, grant = granted
    with database.transaction() as session:
        # Mapped, but disabled behind the engine's back: nothing justifies access to it.
        session.execute(update(Connector).values(enabled=False))
    run_scan(database)
    assert findings(database, FindingKind.UNJUSTIFIED_GRANT) == [(str(grant.id), "open")]
    with database.transaction() as session:
        session.execute(update(Connector).values(enabled=True))
    run_scan(database)
    assert findings(database, FindingKind.UNJUSTIFIED_GRANT) == [(str(grant.id), "resolved")]


def test_orphaned_user_follows_the_last_full_reconciliation(database, origin):
    with database.transaction() as session:
        ghost = Org(session, origin).user("ghost@example.com", external_id="00ughost")
        session.add(
            SyncRun(
                kind="reconcile",
                mode="full",
                status=RunStatus.SUCCEEDED,
                counts={},
                drift={"orphaned": ["00ughost"]},
            )
        )
    run_scan(database)
    assert findings(database, FindingKind.ORPHANED_USER) == [(str(ghost.id), "open")]
    with database.transaction() as session:
        session.add(
            SyncRun(
                kind="reconcile",
                mode="full",
                status=RunStatus.SUCCEEDED,
                counts={},
                drift={"orphaned": []},
                started_at=utcnow() + dt.timedelta(seconds=1),
            )
        )
    run_scan(database)
    assert findings(database, FindingKind.ORPHANED_USER) == [(str(ghost.id), "resolved")]


def test_connector_findings(database, origin):
    with database.transaction() as session:
        Org(session, origin).connector(
            "vendor", reassess_by=(utcnow() - dt.timedelta(days=1)).date()
        )
        # Enabled against the guards, by a direct database edit.
        session.execute(
            update(Connector).values(
                publisher="third_party",
                security_review="pending",
                data_classification="regulated",
                compliance_assessment=None,
            )
        )
    run_scan(database)
    for kind in (
        FindingKind.REASSESSMENT_OVERDUE,
        FindingKind.UNREVIEWED_THIRD_PARTY,
        FindingKind.UNASSESSED_REGULATED,
    ):
        assert findings(database, kind) == [("vendor", "open")]
    with database.transaction() as session:
        session.execute(update(Connector).values(enabled=False))
    run_scan(database)
    assert findings(database, FindingKind.REASSESSMENT_OVERDUE) == [("vendor", "resolved")]


def test_a_suppressed_finding_stays_suppressed_and_is_not_reopened(database, granted, origin):
    with database.transaction() as session:
        session.execute(update(Grant).values(granted_at=days_ago(100)))
    run_scan(database)
    with database.transaction() as session:
        finding = session.scalar(select(Finding))
        with pytest.raises(ValueError, match="reason"):
            decide(session, origin, finding, FindingState.SUPPRESSED, "")
        decide(session, origin, finding, FindingState.SUPPRESSED, "break-glass account")
    run_scan(database)
    with database.reader() as session:
        assert session.scalar(select(func.count(Finding.id))) == 1
        finding = session.scalar(select(Finding))
        assert (finding.state, finding.decided_by) == ("suppressed", "test-admin")
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "finding.suppressed"))
        assert event.reason == "break-glass account"


def scanned_at(database, kind: FindingKind, subject_type: str) -> dt.datetime:
    with database.reader() as session:
        return session.get(FindingScan, (str(kind), subject_type)).scanned_at


def dormant_through_two_scans(database) -> dt.datetime:
    """Every grant dormant, seen by two scans; the time of the second."""
    with database.transaction() as session:
        session.execute(update(Grant).values(granted_at=days_ago(100)))
    run_scan(database)
    run_scan(database)
    return scanned_at(database, "dormant_grant", "grant")


def used_then_scanned(database) -> None:
    """Every grant used yesterday, then a scan: the dormancy's cause is gone."""
    with database.transaction() as session:
        session.execute(update(Grant).values(last_used_at=days_ago(1)))
    run_scan(database)


def dormant(database) -> Finding:
    with database.reader() as session:
        return session.scalar(select(Finding).where(Finding.kind == FindingKind.DORMANT_GRANT))


def test_last_seen_is_the_last_scan_that_saw_the_cause(database, granted):
    with database.transaction() as session:
        session.execute(update(Grant).values(granted_at=days_ago(100)))
    run_scan(database)
    first = dormant(database)
    assert first.last_seen == first.first_seen == scanned_at(database, "dormant_grant", "grant")
    run_scan(database)
    second = scanned_at(database, "dormant_grant", "grant")
    finding = dormant(database)
    assert finding.last_seen == second > finding.first_seen
    # What the API shows; the row itself was not rewritten by the second scan.
    assert FindingOut.model_validate(finding, from_attributes=True).last_seen == second
    assert finding.recorded_last_seen == finding.first_seen
    used_then_scanned(database)
    finding = dormant(database)
    # Resolved by the third scan, last seen by the second.
    assert finding.state == "resolved" and finding.decision_reason == "cause gone"
    assert finding.last_seen == finding.recorded_last_seen == second
    assert finding.resolved_at == scanned_at(database, "dormant_grant", "grant") > second


def test_a_suppressed_finding_is_last_seen_while_its_cause_remains(database, granted, origin):
    second = dormant_through_two_scans(database)
    with database.transaction() as session:
        finding = session.scalar(select(Finding))
        decide(session, origin, finding, FindingState.SUPPRESSED, "service account")
        assert finding.last_seen == finding.recorded_last_seen == second
    run_scan(database)
    third = scanned_at(database, "dormant_grant", "grant")
    assert dormant(database).last_seen == third > second
    used_then_scanned(database)
    finding = dormant(database)
    assert (finding.state, finding.last_seen) == ("suppressed", third)


def test_a_finding_resolved_by_hand_keeps_its_last_sighting(database, granted, origin):
    second = dormant_through_two_scans(database)
    with database.transaction() as session:
        decide(session, origin, session.scalar(select(Finding)), FindingState.RESOLVED, "known")
    # A later scan opens a new finding for the cause; the resolved one keeps its sighting.
    run_scan(database)
    with database.reader() as session:
        rows = session.scalars(select(Finding).order_by(Finding.id)).all()
        assert [(f.state, f.last_seen) for f in rows] == [
            ("resolved", second),
            ("open", scanned_at(database, "dormant_grant", "grant")),
        ]
