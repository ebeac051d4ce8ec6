"""Liveness and readiness endpoints for operators and load balancers."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from provisioning import liveness
from provisioning.database import Database, DatabaseError
from provisioning.web.problems import problem

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """The process is up and answering."""
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> Response:
    """The database is reachable and at the latest migration, and this process's
    background loops (if it runs any) all go round: none stopped, none stalled."""
    database: Database = current_app.extensions["provisioning.database"]
    try:
        database.check_ready()
    except DatabaseError as exc:
        return problem(503, "Service Unavailable", str(exc))
    loops = liveness.statuses()
    if faults := [status for status in loops if status.state != "alive"]:
        return problem(
            503,
            "Service Unavailable",
            "; ".join(str(fault) for fault in faults),
            loops=[status.as_json() for status in loops],
        )
    return jsonify(
        status="ready",
        schema=database.head(),
        database=database.dialect,
        loops=[status.as_json() for status in loops],
    )
