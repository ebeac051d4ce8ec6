"""The HTTP client the senders share (httpx2), and what its errors mean as failed attempts.

Every connection it makes goes through the egress policy
(:mod:`provisioning.delivery.egress`): httpcore2, under httpx2, asks its
network backend to connect to a host and port; :class:`CheckedBackend`
resolves the host itself, checks every address, and connects to the checked
address. TLS is then negotiated by httpcore2 with the URL's host name (SNI and
certificate check unchanged), and the Host header is the URL's. A kept-alive
connection was checked when it was made. Redirects are never followed, and no
proxy is taken from the environment (through a proxy, the address connected
to would not be the target's).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import anyio.to_thread
import httpcore2
import httpx2

from provisioning import correlation
from provisioning.delivery.egress import Egress
from provisioning.delivery.message import DeliveryFailed, Failure

_UNREACHED = (httpcore2.ConnectError, httpcore2.ConnectTimeout)


def _addresses(egress: Egress, host: str, port: int) -> list[Any]:
    """The addresses the policy allows for ``host`` (EgressRefused passes through); a
    name that does not resolve is a connection error. Each address is then connected to
    as itself, in turn: no lookup again."""
    try:
        return list(egress.addresses(host, port))
    except OSError as exc:
        raise httpcore2.ConnectError(str(exc)) from exc


class CheckedBackend(httpcore2.SyncBackend):
    """httpcore2's own network backend, connecting only to addresses the policy allows."""

    def __init__(self, egress: Egress) -> None:
        super().__init__()
        self.egress = egress

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        failed: Exception | None = None
        for address in _addresses(self.egress, host, port):
            try:
                return super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except _UNREACHED as exc:
                failed = exc
        assert failed is not None
        raise failed


# The pool settings of both transports (each pool gets a TLS context of its own).
_POOL: dict[str, Any] = {
    "max_connections": 100,
    "max_keepalive_connections": 20,
    "keepalive_expiry": 5.0,
}
# Both clients: no redirect followed, no proxy from the environment.
_RULES: dict[str, Any] = {"follow_redirects": False, "trust_env": False}


class CheckedTransport(httpx2.HTTPTransport):
    """httpx2's transport on a connection pool whose connections go through the policy.

    ``HTTPTransport`` takes no network backend, so its pool is built here with
    one; its request handling and closing use that pool and nothing else.
    """

    def __init__(self, egress: Egress) -> None:
        self._pool = httpcore2.ConnectionPool(
            ssl_context=httpx2.create_ssl_context(),
            network_backend=CheckedBackend(egress),
            **_POOL,
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        # The request id of the change being delivered (the worker puts it in force).
        request_id = correlation.current()
        if request_id is not None and "X-Request-ID" not in request.headers:
            request.headers["X-Request-ID"] = request_id
        return super().handle_request(request)


class CheckedAsyncBackend(httpcore2.AnyIOBackend):
    """The asynchronous twin of :class:`CheckedBackend` (the MCP SDK's client is async)."""

    def __init__(self, egress: Egress) -> None:
        super().__init__()
        self.egress = egress

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        failed: Exception | None = None
        for address in await anyio.to_thread.run_sync(_addresses, self.egress, host, port):
            try:
                return await super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except _UNREACHED as exc:
                failed = exc
        assert failed is not None
        raise failed


class CheckedAsyncTransport(httpx2.AsyncHTTPTransport):
    """httpx2's async transport on a pool whose connections go through the policy."""

    def __init__(self, egress: Egress) -> None:
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(),
            network_backend=CheckedAsyncBackend(egress),
            **_POOL,
        )


def async_client(egress: Egress, *, timeout: float, **options: Any) -> httpx2.AsyncClient:
    """:func:`client`'s asynchronous twin, under the same policy and rules."""
    return httpx2.AsyncClient(
        transport=CheckedAsyncTransport(egress), timeout=timeout, **_RULES, **options
    )


def client(egress: Egress, *, timeout: float, **options: Any) -> httpx2.Client:
    """A client under the egress policy that never follows a redirect or uses a proxy."""
    return httpx2.Client(transport=CheckedTransport(egress), timeout=timeout, **_RULES, **options)


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
