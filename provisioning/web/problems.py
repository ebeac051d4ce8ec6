"""RFC 9457 problem details for every HTTP error the service answers."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from provisioning.web import logs

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:provisioning:problem:"


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> Response:
    """A ``application/problem+json`` response (RFC 9457 section 3)."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)


def install(app: Flask) -> None:
    """Answer every HTTP error, and any unexpected one, as problem+json."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        kind = getattr(exc, "kind", None)  # the body rule's refusals name their problem
        extra = {"type": TYPE_PREFIX + kind} if kind else {}
        response = problem(exc.code or 500, exc.name, exc.description, **extra)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error in %s", logs.request_line())
        return problem(500, "Internal Server Error", "the error was logged")
