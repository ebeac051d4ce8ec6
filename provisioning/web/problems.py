"""RFC 9457 problem details for every HTTP error the service answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from provisioning.web import logs

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:provisioning:problem:"
_EDGES = "provisioning.web.edge_errors"


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> Response:
    """A ``application/problem+json`` response (RFC 9457 section 3)."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)


def edge_errors(app: Flask, prefix: str, answer: Callable[[Exception], Response]) -> None:
    """Have ``answer`` answer, in its edge's format, the errors of requests under ``prefix``
    that no handler of that edge saw: those raised before a request is routed to it (a
    405 or 404 for a path none of its rules matches, a body over the limit)."""
    app.extensions.setdefault(_EDGES, {})[prefix.rstrip("/")] = answer


def _edge_answer(app: Flask) -> Callable[[Exception], Response] | None:
    path = request.path
    for prefix, answer in app.extensions.get(_EDGES, {}).items():
        if path == prefix or path.startswith(prefix + "/"):
            return answer
    return None


def install(app: Flask) -> None:
    """Answer every HTTP error, and any unexpected one, as problem+json (or in the format
    of the edge the request is for: :func:`edge_errors`)."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        answer = _edge_answer(app)
        if answer is not None:
            return answer(exc)
        kind = getattr(exc, "kind", None)  # the body rule's refusals name their problem
        extra = {"type": TYPE_PREFIX + kind} if kind else {}
        response = problem(exc.code or 500, exc.name, exc.description, **extra)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        answer = _edge_answer(app)
        if answer is not None:
            return answer(exc)
        app.logger.exception("unhandled error in %s", logs.request_line())
        return problem(500, "Internal Server Error", "the error was logged")
