"""The HTTP client the senders share (httpx2), and what its errors mean as failed attempts."""

from __future__ import annotations

import ssl
from http import HTTPStatus
from typing import Any

import httpx2

from provisioning.delivery.message import DeliveryFailed, Failure


def client(*, timeout: float, **options: Any) -> httpx2.Client:
    """A client that never follows a redirect and ignores proxy and netrc settings."""
    return httpx2.Client(timeout=timeout, follow_redirects=False, trust_env=False, **options)


def status_failure(status: int) -> DeliveryFailed:
    """An answer without a 2xx: its status and the standard phrase (never the peer's own)."""
    try:
        text = f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        text = f"HTTP {status}"
    if 300 <= status < 400:
        text += " (redirects are not followed)"
    return DeliveryFailed(Failure.HTTP_STATUS, text)


def _tls(exc: BaseException) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def failure(exc: httpx2.HTTPError) -> DeliveryFailed:
    """The failed attempt an httpx2 error means.

    The library's message says what went wrong on our side (refused, timed out,
    certificate); a protocol error's message may quote the peer's bytes, so only
    its name is kept.
    """
    if isinstance(exc, httpx2.TimeoutException):
        kind = Failure.TIMEOUT
    elif isinstance(exc, httpx2.ConnectError):
        kind = Failure.TLS if _tls(exc) else Failure.CONNECT
    elif isinstance(exc, httpx2.TransportError):
        kind = Failure.NETWORK
    else:
        kind = Failure.SENDER_ERROR
    text = type(exc).__name__
    if not isinstance(exc, httpx2.ProtocolError) and str(exc):
        text += ": " + str(exc).splitlines()[0][:200]
    return DeliveryFailed(kind, text)
