"""How the service's processes log: JSON lines (plain text on a terminal), each with the
request id in force, and nothing secret in any of them.

Every process (gunicorn's workers, ``provisioning serve``, ``provisioning worker``) calls
:func:`configure` once; the libraries' loggers (gunicorn, APScheduler, SQLAlchemy) go
through the same handler. A JSON line carries ``time``, ``level``, ``logger``,
``message`` and ``request_id``, and the request line (``provisioning.requests``) also
``method``, ``route``, ``path``, ``status``, ``duration_ms`` and ``actor``.

Secrets: the service's own messages never format one; as a second guard every line is
scrubbed before it is written: bearer credentials, the service's ``prov_`` tokens, and
the values of credential-carrying query parameters (:func:`redact_query`).
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from typing import Any
from urllib.parse import unquote_plus

from pythonjsonlogger.json import JsonFormatter

from provisioning import correlation

SENSITIVE = ("access_token", "token", "key", "secret", "password", "code")
REDACTED = "[redacted]"

_SEPARATORS = re.compile(r"([&;])")


def sensitive(name: str) -> bool:
    """Whether a query parameter of this name carries a credential: ``access_token``,
    ``token``, ``key``, ``secret``, ``password`` or ``code``, or a name ending in one of
    them after ``_`` or ``-`` (``id_token``, ``client_secret``, ``api-key``), in any case
    and however percent-encoded."""
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


# The second guard, over whole lines: an Authorization value, a service token, a
# credential-named query parameter or field anywhere in the text.
_SCRUB = (
    (re.compile(r"(?i)\b(bearer|basic|ssws)\s+[^\s\"',;]+"), r"\1 " + REDACTED),
    (re.compile(r"\bprov_[^\s\"',;&]{8,}"), REDACTED),
    (
        re.compile(
            r"(?i)\b([\w\-]*(?:access_token|token|secret|password|api[_-]?key))=[^\s&;\"']+"
        ),
        r"\1=" + REDACTED,
    ),
)


def scrub(text: str) -> str:
    """``text`` with anything shaped like a credential redacted."""
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


class RequestIdFilter(logging.Filter):
    """Puts the request id in force on every record (``request_id``; None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = correlation.current()
        return True


class JsonLines(JsonFormatter):
    """One JSON object per line: time, level, logger, message, request id and the extras."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(levelname)s %(name)s %(message)s %(request_id)s")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", "time")  # ISO 8601 in UTC, to the microsecond
        super().__init__(*args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class PlainText(logging.Formatter):
    """For a person at a terminal: time, level, logger, message, then the extras."""

    _EXTRAS = ("request_id", "method", "path", "status", "duration_ms", "actor")

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [
            f"{name}={getattr(record, name)}"
            for name in self._EXTRAS
            if getattr(record, name, None) is not None
        ]
        return scrub(f"{text} [{' '.join(extras)}]" if extras else text)


def formatter(form: str = "auto", stream: Any = None) -> logging.Formatter:
    """JSON lines, or plain text for ``form="text"`` or (``"auto"``) a terminal."""
    stream = sys.stderr if stream is None else stream
    if form == "text" or (form == "auto" and getattr(stream, "isatty", lambda: False)()):
        return PlainText()
    return JsonLines()


def handler(form: str = "auto", stream: Any = None) -> logging.Handler:
    """A handler writing to ``stream`` (stderr) in the chosen form, with request ids."""
    stream = sys.stderr if stream is None else stream
    out = logging.StreamHandler(stream)
    out.setFormatter(formatter(form, stream))
    out.addFilter(RequestIdFilter())
    return out


def configure(level: str = "INFO", form: str = "auto") -> None:
    """Route every logger of this process to one stderr handler (see the module)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(form))
    root.setLevel(level)
    # gunicorn's own loggers write through the root's handler, not their own.
    for name in ("gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True


def gunicorn_config(level: str = "INFO", form: str = "auto") -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its loggers and the service's through one handler."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"service": {"()": formatter, "form": form}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "service",
                "filters": ["request_id"],
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": level, "handlers": [], "propagate": True},
        },
    }
