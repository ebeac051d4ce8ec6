"""What the logs say of a request: its id, its one request line, and its line without
credentials in gunicorn's access log.

:func:`install` gives every request an id (the caller's ``X-Request-ID`` when it is a
plausible id, else a fresh one: :mod:`provisioning.correlation`), puts it in force for
the audit events and outbox messages the request writes, echoes it, and writes one
``provisioning.requests`` line when the request ends: method, route template, path
(credentials in its query string redacted), status, duration and actor. The same end
observes ``http_request_duration_seconds``.

The service reads credentials from headers only, and refuses a request that carries one
in its query string; but it still arrives, and the request line is what access logs
write (:func:`provisioning.logs.redact_query`). Header fields that carry credentials
(``Authorization``, ``Cookie``, anything naming a token, secret or key) are redacted
whole if an access log format names them.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from flask import Flask, Response, g, request
from gunicorn import glogging

from provisioning import correlation
from provisioning.logs import REDACTED, redact_query, redact_target
from provisioning.metrics import HTTP_REQUEST_SECONDS

_SECRET_HEADER = re.compile(r"auth|cookie|token|secret|key|password", re.IGNORECASE)

requests_log = logging.getLogger("provisioning.requests")


def request_line() -> str:
    """The current request's method and target, for the service's own logs."""
    return f"{request.method} {_path()}"


def _path() -> str:
    query = request.query_string.decode("latin-1")
    return request.script_root + request.path + (f"?{redact_query(query)}" if query else "")


def install(app: Flask) -> None:
    """Request ids, the request line and the request duration histogram for ``app``."""
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)
    app.after_request(_end)
    app.teardown_request(_forget)


def _begin() -> None:
    g.request_id = correlation.accept(request.headers.get("X-Request-ID"))
    g.request_token = correlation.set_current(g.request_id)
    g.request_started = time.perf_counter()


def _end(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is None:  # refused before any before_request ran
        return response
    response.headers["X-Request-ID"] = request_id
    seconds = time.perf_counter() - g.request_started
    route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
    HTTP_REQUEST_SECONDS.labels(
        method=request.method, route=route, status=str(response.status_code)
    ).observe(seconds)
    caller = g.get("caller")
    requests_log.info(
        "%s %s %s",
        request.method,
        _path(),
        response.status_code,
        extra={
            "method": request.method,
            "route": route,
            "path": _path(),
            "status": response.status_code,
            "duration_ms": round(seconds * 1000, 3),
            "actor": getattr(caller, "name", None),
        },
    )
    return response


def _forget(_error: BaseException | None) -> None:
    token = g.pop("request_token", None)
    if token is not None:
        correlation.reset(token)


class AccessLogger(glogging.Logger):
    """gunicorn's logger, whose access log atoms (request line, query string, referer,
    credential headers) hold no credentials (``logger_class`` in deploy/gunicorn.conf.py)."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        # gunicorn writes access lines whenever a logconfig_dict is set; the service logs
        # its own request line, so gunicorn's is written only when ``accesslog`` asks.
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["r"] = " ".join(
            (
                str(environ.get("REQUEST_METHOD", "-")),
                redact_target(str(environ.get("RAW_URI", ""))),
                str(environ.get("SERVER_PROTOCOL", "-")),
            )
        )
        atoms["q"] = redact_query(str(atoms.get("q") or ""))
        atoms["f"] = redact_target(str(atoms.get("f") or "-"))
        for name, value in atoms.items():
            if not (name.startswith("{") and isinstance(value, str)):
                continue
            field = name[1:].rpartition("}")[0]
            if _SECRET_HEADER.search(field):
                atoms[name] = REDACTED
            elif "uri" in field or "query" in field or "referer" in field:
                atoms[name] = redact_target(value) if "?" in value else redact_query(value)
        return atoms
