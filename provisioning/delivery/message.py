"""What a sender is handed (one outbox message) and how it says a delivery failed."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    id: int
    event_id: uuid.UUID
    event_type: str
    user_id: uuid.UUID
    payload: dict[str, Any]
    created_at: dt.datetime
    # The X-Request-ID of the request that made the change, if one did: sent as the
    # X-Request-ID of every HTTP request sending it (provisioning.delivery.transport),
    # so that one id follows a change end to end.
    request_id: str | None = None

    def document(self) -> dict[str, Any]:
        """The event as a receiver sees it; ``sequence`` orders one user's events."""
        return {
            "id": str(self.event_id),
            "type": self.event_type,
            "occurred_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "sequence": self.id,
            "data": self.payload,
        }


class Failure(enum.StrEnum):
    """Why an attempt failed; the ``kind`` label of ``delivery_errors_total``."""

    HTTP_STATUS = "http_status"  # the target answered, with no 2xx (a redirect included)
    BAD_ANSWER = "bad_answer"  # a SCIM answer the client could not read
    TIMEOUT = "timeout"
    CONNECT = "connect"  # no connection: refused, unreachable, name not found
    TLS = "tls"  # the TLS handshake failed (certificate, protocol)
    NETWORK = "network"  # the connection broke, or the peer did not speak HTTP
    EGRESS_REFUSED = "egress_refused"  # the address is not one delivery may connect to
    SENDER_ERROR = "sender_error"  # anything else: the sender could not be built, or raised


class DeliveryFailed(Exception):
    """The target did not acknowledge the message: why, in a few words of our own.

    The text is kept as the message's ``last_error`` and shown by the API: no
    secret, and nothing of what the peer sent beyond a status.
    """

    def __init__(self, kind: Failure, text: str) -> None:
        super().__init__(text)
        self.kind = kind
