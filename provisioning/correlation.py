"""The request id in force: one id that follows a change from its HTTP request to the log
lines it wrote, its audit events and the outbox messages that tell downstream targets.

The web edge sets it for each request (:func:`accept` on the caller's ``X-Request-ID``, or
:func:`new`); the audit log and the outbox read it with :func:`current` when they write,
and the log formatter puts it on every line. Outside a request it is None.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# What a request id may be: the characters of UUIDs, ULIDs, W3C trace ids and the ids
# proxies generate (``req-…``, ``1a2b:3c4d``), up to 128 of them. Anything else (a
# newline, a quote, markup, a megabyte) is replaced by an id of our own, never logged.
MAX_LENGTH = 128
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")

_current: ContextVar[str | None] = ContextVar("provisioning_request_id", default=None)


def new() -> str:
    """A fresh request id (a UUID4 in hex)."""
    return uuid.uuid4().hex


def accept(given: str | None) -> str:
    """The request id to use for a request that sent ``given``: itself if it is a
    plausible id (see ``_VALID``), else a fresh one."""
    if given is not None and _VALID.fullmatch(given):
        return given
    return new()


def current() -> str | None:
    """The request id in force in this context, if any."""
    return _current.get()


def set_current(request_id: str | None) -> object:
    """Put ``request_id`` in force; returns a token for :func:`reset`."""
    return _current.set(request_id)


def reset(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


@contextmanager
def in_force(request_id: str | None) -> Iterator[str | None]:
    """Run a block (a job, a CLI command) with ``request_id`` in force."""
    token = _current.set(request_id)
    try:
        yield request_id
    finally:
        _current.reset(token)
