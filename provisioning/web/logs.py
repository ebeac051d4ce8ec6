"""What the logs say of a request: its line without credentials, in gunicorn's access log
and in the service's own logs.

The service reads credentials from headers only, and refuses a request that carries one
in its query string; but it still arrives, and the request line is what access logs
write. Before a query string is logged, the value of every parameter named
``access_token``, ``token``, ``key``, ``secret``, ``password`` or ``code``, or ending in
one of them after ``_`` or ``-`` (``id_token``, ``client_secret``, ``api-key``), in any
case and however percent-encoded, becomes ``[redacted]``; the rest is kept as sent.
Header fields that carry credentials (``Authorization``, ``Cookie``, anything naming a
token, secret or key) are redacted whole if an access log format names them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

from flask import request
from gunicorn import glogging

SENSITIVE = ("access_token", "token", "key", "secret", "password", "code")
REDACTED = "[redacted]"

_SEPARATORS = re.compile(r"([&;])")
_SECRET_HEADER = re.compile(r"auth|cookie|token|secret|key|password", re.IGNORECASE)


def sensitive(name: str) -> bool:
    """Whether a query parameter of this name carries a credential."""
    name = unquote_plus(name).strip().lower()
    return any(name == word or name.endswith(("_" + word, "-" + word)) for word in SENSITIVE)


def redact_query(query: str) -> str:
    """``query`` with the value of every credential-carrying parameter redacted."""
    if not query:
        return query
    parts = _SEPARATORS.split(query)
    for index in range(0, len(parts), 2):  # odd indexes hold the separators
        name = parts[index].partition("=")[0]
        if sensitive(name):
            parts[index] = f"{name}={REDACTED}"
    return "".join(parts)


def redact_target(target: str) -> str:
    """A request target or URL (path and query string) with :func:`redact_query` applied."""
    path, question, query = target.partition("?")
    if not question:
        return target
    query, hash_, fragment = query.partition("#")
    return f"{path}?{redact_query(query)}{hash_}{fragment}"


def request_line() -> str:
    """The current request's method and target, for the service's own logs."""
    query = request.query_string.decode("latin-1")
    target = request.script_root + request.path + (f"?{redact_query(query)}" if query else "")
    return f"{request.method} {target}"


class AccessLogger(glogging.Logger):
    """gunicorn's logger, whose access log atoms (request line, query string, referer,
    credential headers) hold no credentials (``logger_class`` in deploy/gunicorn.conf.py)."""

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
