"""What a sender is handed (one outbox message) and how it says a delivery failed."""

from __future__ import annotations

import datetime as dt
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

    def document(self) -> dict[str, Any]:
        """The event as a receiver sees it; ``sequence`` orders one user's events."""
        return {
            "id": str(self.event_id),
            "type": self.event_type,
            "occurred_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "sequence": self.id,
            "data": self.payload,
        }


class DeliveryFailed(Exception):
    """The target did not acknowledge the message; the text says why (no secrets)."""
