"""Webhook targets: each event POSTed as JSON, signed with HMAC-SHA256 over timestamp and body.

The request carries::

    X-Provisioning-Event-Id:   the event's id, the same on every attempt (dedupe on it)
    X-Provisioning-Event-Type: grant.created, grant.revoked, user.offboarded, ...
    X-Provisioning-Signature:  t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

A receiver recomputes the HMAC over the timestamp, a dot and the raw body,
compares in constant time, and rejects a timestamp too far from its clock
(:func:`verify` does all three). Any 2xx acknowledges; anything else, a
redirect included (never followed), is a failed attempt to retry. The answer's
body is never kept: a failed attempt records the status alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx2

from provisioning.delivery import transport
from provisioning.delivery.egress import Egress
from provisioning.delivery.message import Message

SIGNATURE_HEADER = "X-Provisioning-Signature"
EVENT_ID_HEADER = "X-Provisioning-Event-Id"
EVENT_TYPE_HEADER = "X-Provisioning-Event-Type"
ANSWER_READ_LIMIT = 64 * 1024


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its timestamp is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).rsplit("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def post(
    http: httpx2.Client, url: httpx2.URL | str, secret: str, body: bytes, headers: dict[str, str]
) -> None:
    """POST ``body`` as JSON, signed with ``secret``; :class:`DeliveryFailed` unless a 2xx
    answers (only the status counts: the answer's body is never kept)."""
    headers = {
        "Content-Type": "application/json",
        **headers,
        SIGNATURE_HEADER: sign(secret, int(time.time()), body),
    }
    try:
        with http.stream("POST", url, content=body, headers=headers) as response:
            status = response.status_code
            # A short answer is read to its end, so that the connection can be used again;
            # a longer one is dropped with the connection.
            read = 0
            for chunk in response.iter_raw():
                read += len(chunk)
                if read > ANSWER_READ_LIMIT:
                    break
    except httpx2.HTTPError as exc:
        raise transport.failure(exc) from None
    if not 200 <= status < 300:
        raise transport.status_failure(status)


class WebhookSender:
    """Sends one target's events over a kept-alive connection pool (safe across threads)."""

    def __init__(self, url: str, secret: str, *, timeout: float, egress: Egress) -> None:
        self.url = httpx2.URL(url)  # a URL the client cannot use fails here, when built
        self._secret = secret
        self._http = transport.client(egress, timeout=timeout)

    def send(self, message: Message) -> None:
        body = json.dumps(message.document(), separators=(",", ":")).encode()
        headers = {
            EVENT_ID_HEADER: str(message.event_id),
            EVENT_TYPE_HEADER: message.event_type,
        }
        post(self._http, self.url, self._secret, body, headers)

    def close(self) -> None:
        self._http.close()
