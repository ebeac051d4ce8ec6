"""Callback targets: an AuthZEN task's completion notification POSTed to the endpoint the
task named, signed as webhooks are (provisioning/delivery/webhook.py).

A message of the callback target (:func:`provisioning.delivery.outbox.enqueue_callback`)
holds ``endpoint`` and ``body``; ``body`` is sent as compact JSON, exactly as stored, with::

    X-Provisioning-Event-Id:   the message's event id, the same on every attempt
    X-Provisioning-Event-Type: request.callback
    X-Provisioning-Signature:  t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>

The key is ``PROVISIONING_CALLBACK_SECRET``; without one, nothing is sent (each attempt
fails, and the message is dead-lettered in the end): a callback is never unauthenticated.
Connections go through the egress policy, as every delivery's does.
"""

from __future__ import annotations

import json

import httpx2

from provisioning.delivery import transport, webhook
from provisioning.delivery.egress import Egress
from provisioning.delivery.message import DeliveryFailed, Failure, Message


class CallbackSender:
    """Sends callback messages, each to its own endpoint, over one connection pool."""

    def __init__(self, secret: str | None, *, timeout: float, egress: Egress) -> None:
        if not secret:
            raise DeliveryFailed(
                Failure.SENDER_ERROR, "PROVISIONING_CALLBACK_SECRET is not set: nothing is signed"
            )
        self._secret = secret
        self._http = transport.client(egress, timeout=timeout)

    def send(self, message: Message) -> None:
        try:
            url = httpx2.URL(message.payload["endpoint"])
            body = json.dumps(message.payload["body"], separators=(",", ":")).encode()
        except (KeyError, TypeError, httpx2.InvalidURL) as exc:
            raise DeliveryFailed(Failure.SENDER_ERROR, f"not a callback message: {exc}") from None
        headers = {
            webhook.EVENT_ID_HEADER: str(message.event_id),
            webhook.EVENT_TYPE_HEADER: message.event_type,
        }
        webhook.post(self._http, url, self._secret, body, headers)

    def close(self) -> None:
        self._http.close()
