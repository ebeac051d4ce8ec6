"""/api/v1/findings, /api/v1/jobs/runs, /api/v1/okta/runs: what the jobs found and did."""

from __future__ import annotations

from flask import Response
from sqlalchemy import select

from provisioning.api import schemas
from provisioning.api.edge import database, fail, found, json_response, listing, origin, route
from provisioning.okta.models import SyncRun
from provisioning.okta.runs import as_json as okta_run_json
from provisioning.oversight.findings import decide
from provisioning.oversight.models import Finding, FindingState
from provisioning.schedule.models import JobRun
from provisioning.tokens.credentials import Scope

READ = Scope.ADMIN_READ.value
WRITE = Scope.ADMIN_WRITE.value
TAG = "oversight"


def _finding(finding: Finding) -> schemas.FindingOut:
    return schemas.FindingOut.model_validate(finding, from_attributes=True)


@route("GET", "/findings", READ, tag=TAG, ok={200: schemas.FindingPage})
def list_findings(query: schemas.FindingQuery) -> Response:
    """Findings by id, filtered by kind, state and subject."""
    statement = select(Finding)
    for column, value in (
        (Finding.kind, query.kind),
        (Finding.state, query.state),
        (Finding.subject_type, query.subject_type),
        (Finding.subject_id, query.subject_id),
    ):
        if value is not None:
            statement = statement.where(column == value)
    with database().reader() as session:
        return listing(session, statement, [Finding.id], query, schemas.FindingPage, _finding)


def _decide(path: schemas.FindingPath, body: schemas.FindingDecisionIn, state: FindingState):
    with database().transaction() as session:
        finding = found(session, Finding, path.finding_id, "finding")
        if finding.state != FindingState.OPEN:
            fail(409, "Conflict", f"finding {finding.id} is {finding.state}", "conflict")
        decide(session, origin(), finding, state, body.reason)
        result = _finding(finding)
    return json_response(result)


@route(
    "POST",
    "/findings/<int:finding_id>/resolve",
    WRITE,
    tag=TAG,
    ok={200: schemas.FindingOut},
    problems=[404, 409],
    summary="Resolve an open finding by hand, with a reason (audited)",
)
def resolve_finding(path: schemas.FindingPath, body: schemas.FindingDecisionIn) -> Response:
    return _decide(path, body, FindingState.RESOLVED)


@route(
    "POST",
    "/findings/<int:finding_id>/suppress",
    WRITE,
    tag=TAG,
    ok={200: schemas.FindingOut},
    problems=[404, 409],
    summary="Suppress an open finding (it is not reopened while its cause stays), audited",
)
def suppress_finding(path: schemas.FindingPath, body: schemas.FindingDecisionIn) -> Response:
    return _decide(path, body, FindingState.SUPPRESSED)


@route("GET", "/jobs/runs", READ, tag=TAG, ok={200: schemas.JobRunPage})
def list_job_runs(query: schemas.JobRunQuery) -> Response:
    """Every recorded job run, oldest first, optionally of one job."""
    statement = select(JobRun)
    if query.job is not None:
        statement = statement.where(JobRun.job == query.job)
    with database().reader() as session:
        return listing(
            session,
            statement,
            [JobRun.id],
            query,
            schemas.JobRunPage,
            lambda run: schemas.JobRunOut.model_validate(run, from_attributes=True),
        )


@route("GET", "/okta/runs", READ, tag=TAG, ok={200: schemas.OktaRunPage})
def list_okta_runs(query: schemas.OktaRunQuery) -> Response:
    """Reconciliation and System Log catch-up runs: counts, drift, requests, errors."""
    statement = select(SyncRun)
    if query.kind is not None:
        statement = statement.where(SyncRun.kind == query.kind)
    with database().reader() as session:
        return listing(
            session,
            statement,
            [SyncRun.id],
            query,
            schemas.OktaRunPage,
            lambda run: schemas.OktaRunOut(**okta_run_json(run)),
        )
