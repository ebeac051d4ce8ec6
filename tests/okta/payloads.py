"""Okta event hook deliveries shaped like Okta's documented envelope and System Log events."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def at(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def user(okta_id: str = "00u1ada", login: str = "ada@example.com", name: str = "Ada Lovelace"):
    return {
        "id": okta_id,
        "type": "User",
        "alternateId": login,
        "displayName": name,
        "detailEntry": None,
    }


def group(okta_id: str = "00g1eng", name: str = "eng-platform"):
    return {
        "id": okta_id,
        "type": "UserGroup",
        "alternateId": "unknown",
        "displayName": name,
        "detailEntry": None,
    }


def event(
    event_type: str,
    targets: list[dict],
    *,
    minute: float = 0,
    uuid_: str | None = None,
    result: str = "SUCCESS",
    debug: dict[str, Any] | None = None,
    actor: dict | None = None,
) -> dict[str, Any]:
    return {
        "uuid": uuid_ or str(uuid.uuid4()),
        "published": at(minute),
        "eventType": event_type,
        "version": "0",
        "displayMessage": event_type,
        "severity": "INFO",
        "client": {"userAgent": None, "zone": "null", "device": "Unknown", "id": None},
        "device": None,
        "actor": actor
        if actor is not None
        else {
            "id": "00uadmin",
            "type": "User",
            "alternateId": "admin@example.com",
            "displayName": "Okta Admin",
            "detailEntry": None,
        },
        "outcome": {"result": result, "reason": None},
        "target": targets,
        "transaction": {"type": "WEB", "id": "YxSa1", "detail": {}},
        "debugContext": {"debugData": debug or {}},
        "legacyEventType": None,
        "authenticationContext": {"authenticationStep": 0, "externalSessionId": "unknown"},
        "securityContext": {"asNumber": None, "asOrg": None, "isp": None, "domain": None},
    }


def delivery(*events: dict, event_id: str | None = None) -> dict[str, Any]:
    return {
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "https://example.okta.com/api/v1/eventHooks/who8tt6dDWqG3TZY10g4",
        "eventId": event_id or str(uuid.uuid4()),
        "eventTime": at(0),
        "contentType": "application/json",
        "data": {"events": list(events)},
    }


def body(*events: dict, event_id: str | None = None) -> bytes:
    return json.dumps(delivery(*events, event_id=event_id)).encode()


def joined(minute: float = 0, **kwargs: Any) -> dict:
    return event("group.user_membership.add", [user(), group()], minute=minute, **kwargs)


def left(minute: float = 0, **kwargs: Any) -> dict:
    return event("group.user_membership.remove", [user(), group()], minute=minute, **kwargs)
