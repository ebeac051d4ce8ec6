"""Callback completion of call-approval tasks (the draft AuthZEN Access Request & Approval
profile): which callbacks a submission may name, and the notification owed when a task closes.

A submission may carry ``callback {endpoint, state?, events?}``. It is taken only when:

- ``endpoint`` falls under a prefix of ``PROVISIONING_CALLBACK_ALLOWLIST`` (the same
  scheme, host and port, and a path at or below the prefix's; none listed: no callback
  is taken), is https (http only to a host whose every address lies in a network of
  ``PROVISIONING_DELIVERY_ALLOWED_NETWORKS``), carries no credentials, fragment or dot
  segment, and passes the delivery egress policy (:mod:`provisioning.delivery.egress`:
  no loopback, private, link-local or metadata address unless that network is allowed),
  checked again on every connection;
- ``state`` (any JSON value, returned unmodified) is at most :data:`MAX_STATE` bytes of
  compact JSON;
- ``events`` is a non-empty subset of :data:`EVENTS` (absent: all of them).

When a task with a callback closes in a status its ``events`` name, :func:`tell` owes
``{state, task {id, status, status_endpoint}}`` to the endpoint through the outbox, in
the transaction of the change (a notification only: no ``result``, the PEP reads the
status endpoint). Delivery signs it (provisioning/delivery/callbacks.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy.orm import Session

from provisioning.delivery import outbox
from provisioning.delivery.egress import Egress, EgressRefused
from provisioning.requests.models import AccessRequest
from provisioning.settings import DEFAULTS, Settings

EVENTS = ("approved", "denied", "expired", "cancelled", "failed", "partial")
MAX_STATE = 1024
MAX_ENDPOINT = 2000
_PRINTABLE = re.compile(r"[!-~]+")  # visible ASCII: no space, no control character


class CallbackError(ValueError):
    """A callback this service will not call (the message says why); nothing was made."""


@dataclass(frozen=True)
class Callback:
    """A checked callback; ``state`` None when the PEP sent none."""

    endpoint: str
    events: tuple[str, ...]
    state: Any = None

    def stored(self, status_endpoint: str) -> dict[str, Any]:
        """What the task keeps (``access_requests.callback``)."""
        kept: dict[str, Any] = {"endpoint": self.endpoint, "events": list(self.events)}
        if self.state is not None:
            kept["state"] = self.state
        kept["status_endpoint"] = status_endpoint
        return kept


def _port(parts: Any) -> int:
    if parts.port is not None:
        return int(parts.port)
    return 443 if parts.scheme == "https" else 80


def covers(prefix: str, endpoint: str) -> bool:
    """Whether ``endpoint`` falls under the allowlisted ``prefix``: the same scheme, host
    and port, and a path equal to the prefix's or below it (at a ``/`` boundary)."""
    mine, theirs = urlsplit(prefix), urlsplit(endpoint)
    if mine.scheme != theirs.scheme or (mine.hostname or "") != (theirs.hostname or ""):
        return False
    if _port(mine) != _port(theirs):
        return False
    base, path = mine.path, theirs.path or "/"
    if base in ("", "/") or path == base:
        return True
    return path.startswith(base if base.endswith("/") else base + "/")


def _hidden(segment: str) -> bool:
    """A path segment a server may read as another place than the prefix it is under."""
    decoded = unquote(segment)
    return decoded in (".", "..") or "/" in decoded or "\\" in decoded


def _endpoint(value: Any, settings: Settings, egress: Egress) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ENDPOINT:
        raise CallbackError(f"callback.endpoint is a URL of 1 to {MAX_ENDPOINT} characters")
    if not _PRINTABLE.fullmatch(value):
        raise CallbackError("callback.endpoint holds a space or a character that is not ASCII")
    try:
        parts = urlsplit(value)
        port = _port(parts)
    except ValueError as exc:
        raise CallbackError(f"callback.endpoint is not a URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CallbackError("callback.endpoint is an https URL with a host")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise CallbackError("callback.endpoint carries no credentials and no #fragment")
    if "\\" in value or any(_hidden(segment) for segment in parts.path.split("/")):
        raise CallbackError(
            "callback.endpoint has no . or .. path segment, backslash or encoded slash"
        )
    if not any(covers(prefix, value) for prefix in settings.callback_prefix_list):
        raise CallbackError(
            "callback.endpoint is not under a callback URL this service allows "
            "(PROVISIONING_CALLBACK_ALLOWLIST)"
        )
    if parts.scheme == "http" and not egress.all_listed(parts.hostname, port):
        raise CallbackError(
            "callback.endpoint is https; plain http only to a network "
            "PROVISIONING_DELIVERY_ALLOWED_NETWORKS allows"
        )
    try:
        egress.check_url(value)
    except EgressRefused as exc:
        raise CallbackError(
            f"callback.endpoint is refused by the egress policy: {exc.reason}"
        ) from None
    return value


def _state(value: Any) -> Any:
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    except (UnicodeEncodeError, ValueError, RecursionError):
        raise CallbackError("callback.state is not JSON this service can keep") from None
    if size > MAX_STATE:
        raise CallbackError(f"callback.state is at most {MAX_STATE} bytes of JSON")
    return value


def _events(value: Any) -> tuple[str, ...]:
    if value is None:
        return EVENTS
    if not isinstance(value, list) or not value:
        raise CallbackError(f"callback.events is a non-empty list of: {', '.join(EVENTS)}")
    for event in value:
        if not isinstance(event, str) or event not in EVENTS:
            raise CallbackError(f"callback.events holds only: {', '.join(EVENTS)}")
    return tuple(dict.fromkeys(value))


def read(document: Any, settings: Settings, egress: Egress) -> Callback | None:
    """The submission's checked callback (None without one); :class:`CallbackError` for one
    that cannot be taken. Resolves the endpoint's host: call it outside any transaction."""
    if not isinstance(document, dict) or document.get("callback") is None:
        return None
    given = document["callback"]
    if not isinstance(given, dict):
        raise CallbackError("callback is an object: endpoint, and optionally state and events")
    if not settings.callback_prefix_list:
        raise CallbackError(
            "this service sends no callbacks (PROVISIONING_CALLBACK_ALLOWLIST is empty): "
            "poll the task's status_endpoint"
        )
    events = _events(given.get("events"))
    state = _state(given.get("state"))
    return Callback(_endpoint(given.get("endpoint"), settings, egress), events, state)


def tell(session: Session, request: AccessRequest, settings: Settings = DEFAULTS) -> None:
    """Owe the task's callback its notification, if it has one and asked for this status
    (the caller's transaction: the change and its notification commit together)."""
    kept = request.callback
    status = str(request.state)
    if not kept or status not in kept.get("events", EVENTS):
        return
    body: dict[str, Any] = {}
    if "state" in kept:
        body["state"] = kept["state"]
    body["task"] = {
        "id": request.task_id,
        "status": status,
        "status_endpoint": kept["status_endpoint"],
    }
    outbox.enqueue_callback(
        session, request.user_id, kept["endpoint"], body, settings.delivery_max_attempts
    )
