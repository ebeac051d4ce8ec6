"""/api/v1/audit: query the hash-chained audit log, or export it as JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Response, stream_with_context
from sqlalchemy import Select, select

from provisioning.api import schemas
from provisioning.api.edge import database, listing, route
from provisioning.audit.log import as_json
from provisioning.audit.models import AuditEvent
from provisioning.tokens.credentials import Scope

AUDIT = Scope.AUDIT_READ.value
TAG = "audit"


def _filtered(query: schemas.AuditQuery) -> Select:
    statement = select(AuditEvent)
    for column, value in (
        (AuditEvent.actor, query.actor),
        (AuditEvent.subject_type, query.subject_type),
        (AuditEvent.subject_id, query.subject_id),
        (AuditEvent.user_id, query.user_id),
        (AuditEvent.source, query.source),
    ):
        if value is not None:
            statement = statement.where(column == value)
    if query.since is not None:
        statement = statement.where(AuditEvent.occurred_at >= query.since)
    if query.until is not None:
        statement = statement.where(AuditEvent.occurred_at < query.until)
    return statement


@route("GET", "/audit", AUDIT, tag=TAG, ok={200: schemas.AuditPage})
def list_audit(query: schemas.AuditQuery) -> Response:
    """Events in chain order, filtered by actor, subject, user, source and time."""
    with database().reader() as session:
        return listing(
            session,
            _filtered(query),
            [AuditEvent.id],
            query,
            schemas.AuditPage,
            lambda event: schemas.AuditEventOut(**as_json(event)),
        )


@route(
    "GET",
    "/audit/export",
    AUDIT,
    tag=TAG,
    ok={
        200: {
            "description": "one event per line, in chain order",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
def export_audit(query: schemas.AuditQuery) -> Response:
    """Every matching event (cursor and limit ignored) as JSON lines, streamed."""
    statement = _filtered(query).order_by(AuditEvent.id).execution_options(yield_per=2000)
    db = database()

    def lines() -> Iterator[str]:
        with db.reader() as session:
            for event in session.execute(statement).scalars():
                yield json.dumps(as_json(event), sort_keys=True, ensure_ascii=False) + "\n"

    return Response(stream_with_context(lines()), mimetype="application/x-ndjson")
