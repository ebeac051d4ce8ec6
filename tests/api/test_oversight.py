"""Findings, job runs and Okta sync runs over the admin API."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from jobs.runner import run_job
from provisioning.audit.models import AuditEvent
from provisioning.database import utcnow
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.okta.models import RunStatus, SyncRun
from provisioning.settings import load
from tests.org import Org


def dormant_finding(database, origin) -> None:
    with database.transaction() as session:
        org = Org(session, origin)
        ada, group, github = org.user(), org.group(), org.connector("github")
        create_mapping(session, origin, group, github, "read")
        org.join(ada, group)
        session.execute(update(Grant).values(granted_at=utcnow() - dt.timedelta(days=120)))
    run = run_job(database, load(database_url=database.url), "stale-scan")
    assert run.outcome == "succeeded"


def test_findings_are_listed_filtered_and_suppressed_with_a_reason(api, database, origin):
    dormant_finding(database, origin)
    listed = api.get("/api/v1/findings?kind=dormant_grant&state=open", scopes=["admin:read"])
    assert listed.status_code == 200
    (finding,) = listed.json["items"]
    assert finding["evidence"]["connector"] == "github"
    assert finding["evidence"]["threshold_days"] == 90
    path = f"/api/v1/findings/{finding['id']}/suppress"
    assert api.post(path, json={"reason": "x"}, scopes=["admin:read"]).status_code == 403
    assert api.post(path, json={}, scopes=["admin:write"]).status_code == 422
    done = api.post(path, json={"reason": "service account"}, scopes=["admin:write"])
    assert done.status_code == 200 and done.json["state"] == "suppressed"
    again = api.post(path, json={"reason": "twice"}, scopes=["admin:write"])
    assert again.status_code == 409
    assert (
        api.post(
            "/api/v1/findings/999/resolve", json={"reason": "r"}, scopes=["admin:write"]
        ).status_code
        == 404
    )
    with database.reader() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "finding.suppressed"))
        assert event.reason == "service account"


def test_job_runs_and_okta_runs_are_readable(api, database, origin):
    dormant_finding(database, origin)
    with database.transaction() as session:
        session.add(
            SyncRun(kind="reconcile", mode="full", status=RunStatus.FAILED, error="HTTP 500")
        )
    runs = api.get("/api/v1/jobs/runs?job=stale-scan", scopes=["admin:read"])
    assert runs.status_code == 200
    assert [r["outcome"] for r in runs.json["items"]] == ["succeeded"]
    okta = api.get("/api/v1/okta/runs?kind=reconcile", scopes=["admin:read"])
    assert okta.json["items"][0]["error"] == "HTTP 500"
    assert api.get("/api/v1/okta/runs?kind=other", scopes=["admin:read"]).status_code == 422
