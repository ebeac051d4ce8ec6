"""An Okta-compatible Management API server for tests: users, groups, members, System Log.

Serves the JSON shapes the okta SDK parses, pages with `Link` headers (self
then next, as Okta does), sends `Date` and `X-Rate-Limit-*` on every answer,
and can be told to fail: a 429, a 500, malformed JSON, a slow answer or an
expired token, on the next requests to a path (or after the next N).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, json, request
from werkzeug.serving import make_server

TOKEN = "00okta-test-token"
EPOCH = "2020-01-01T00:00:00.000Z"


def iso(moment: dt.datetime) -> str:
    return (
        moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{moment.microsecond // 1000:03d}Z"
    )


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Fault:
    path: str  # a prefix of the request path
    status: int = 500
    times: int = 1
    body: str | None = None
    delay: float = 0.0
    skip: int = 0  # requests to the path answered normally before the fault starts


@dataclass
class OktaState:
    users: dict[str, dict] = field(default_factory=dict)
    groups: dict[str, dict] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    logs: list[dict] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    requests: Counter = field(default_factory=Counter)
    rate_limit: int = 10_000
    token: str = TOKEN
    lock: threading.RLock = field(default_factory=threading.RLock)
    version: int = 0
    _listings: dict = field(default_factory=dict)

    def changed(self) -> None:
        self.version += 1

    def listing(self, kind: str, expression: str | None, build) -> tuple[list[dict], dict]:
        """A filtered listing and its positions, cached until the state changes."""
        key = (kind, expression, self.version)
        with self.lock:
            if key not in self._listings:
                self._listings.clear()
                items = build()
                self._listings[key] = (items, {item["id"]: i for i, item in enumerate(items)})
            return self._listings[key]

    # -- building the org -------------------------------------------------

    def add_user(
        self, login: str, *, status: str = "ACTIVE", okta_id: str | None = None, **profile: Any
    ) -> dict:
        okta_id = okta_id or "00u" + uuid.uuid4().hex[:17]
        stamp = iso(now())
        first, _, last = profile.pop("name", login.split("@")[0] + " Person").partition(" ")
        user = {
            "id": okta_id,
            "status": status,
            "created": stamp,
            "activated": stamp,
            "statusChanged": stamp,
            "lastLogin": None,
            "lastUpdated": stamp,
            "passwordChanged": stamp,
            "type": {"id": "oty1default"},
            "profile": {
                "login": login,
                "email": login,
                "firstName": first,
                "lastName": last or "Person",
                **profile,
            },
            "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
            "_links": {"self": {"href": f"/api/v1/users/{okta_id}"}},
        }
        with self.lock:
            self.users[okta_id] = user
            self.changed()
        return user

    def add_group(self, name: str, *, okta_id: str | None = None) -> dict:
        okta_id = okta_id or "00g" + uuid.uuid4().hex[:17]
        stamp = iso(now())
        group = {
            "id": okta_id,
            "created": stamp,
            "lastUpdated": stamp,
            "lastMembershipUpdated": stamp,
            "objectClass": ["okta:user_group"],
            "type": "OKTA_GROUP",
            "profile": {"name": name, "description": None},
            "_links": {"self": {"href": f"/api/v1/groups/{okta_id}"}},
        }
        with self.lock:
            self.groups[okta_id] = group
            self.members[okta_id] = []
            self.changed()
        return group

    def add_member(self, group_id: str, user_id: str, *, log: bool = False) -> None:
        with self.lock:
            if user_id not in self.members[group_id]:
                self.members[group_id].append(user_id)
            self.groups[group_id]["lastMembershipUpdated"] = iso(now())
            self.changed()
            if log:
                self.log("group.user_membership.add", user_id, group_id)

    def remove_member(self, group_id: str, user_id: str, *, log: bool = False) -> None:
        with self.lock:
            if user_id in self.members[group_id]:
                self.members[group_id].remove(user_id)
            self.groups[group_id]["lastMembershipUpdated"] = iso(now())
            self.changed()
            if log:
                self.log("group.user_membership.remove", user_id, group_id)

    def set_status(self, user_id: str, status: str, *, log_type: str | None = None) -> None:
        with self.lock:
            user = self.users[user_id]
            user["status"] = status
            user["statusChanged"] = user["lastUpdated"] = iso(now())
            self.changed()
            if log_type:
                self.log(log_type, user_id)

    def log(self, event_type: str, user_id: str, group_id: str | None = None) -> dict:
        user = self.users[user_id]
        targets = [
            {
                "id": user_id,
                "type": "User",
                "alternateId": user["profile"]["login"],
                "displayName": f"{user['profile']['firstName']} {user['profile']['lastName']}",
                "detailEntry": None,
            }
        ]
        if group_id:
            targets.append(
                {
                    "id": group_id,
                    "type": "UserGroup",
                    "alternateId": "unknown",
                    "displayName": self.groups[group_id]["profile"]["name"],
                    "detailEntry": None,
                }
            )
        event = {
            "uuid": str(uuid.uuid4()),
            "published": iso(now()),
            "eventType": event_type,
            "version": "0",
            "severity": "INFO",
            "displayMessage": event_type,
            "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@example.com"},
            "client": None,
            "outcome": {"result": "SUCCESS", "reason": None},
            "target": targets,
            "debugContext": {"debugData": {}},
        }
        with self.lock:
            self.logs.append(event)
        return event

    def fail(self, path: str, status: int = 500, times: int = 1, **kwargs: Any) -> None:
        with self.lock:
            self.faults.append(Fault(path, status, times, **kwargs))


# -- the filter language we need: `field op "value"` joined by and/or --------
# A value is a string with `\"` and `\\` escaped; `and`/`or` inside one are its text.

_CLAUSE = re.compile(
    r'\s*\(?\s*([\w.]+)\s+(eq|gt|ge|lt|le|sw|pr)\s*(?:"((?:[^"\\]|\\.)*)")?\s*\)?\s*'
    r"(?:(and|or)\s+|$)",
    re.I,
)


def matches(expression: str | None, item: dict) -> bool:
    if not expression:
        return True
    alternatives: list[list[tuple]] = [[]]
    position = 0
    while position < len(expression):
        match = _CLAUSE.match(expression, position)
        if match is None or match.end() == position:
            raise ValueError(f"unsupported filter {expression!r}")
        name, op, value, joiner = match.groups()
        if value is not None:
            value = re.sub(r"\\(.)", r"\1", value)
        alternatives[-1].append((name, op.lower(), value))
        if joiner and joiner.lower() == "or":
            alternatives.append([])
        position = match.end()
    return any(all(_clause(*c, item) for c in clauses) for clauses in alternatives)


def _clause(name: str, op: str, value: str | None, item: dict) -> bool:
    actual: Any = item
    for part in name.split("."):
        actual = actual.get(part) if isinstance(actual, dict) else None
    if op == "pr":
        return actual is not None
    if actual is None:
        return False
    actual, value = str(actual), str(value)
    if op == "eq":
        return actual.lower() == value.lower()
    if op == "sw":
        return actual.lower().startswith(value.lower())
    return {
        "gt": actual > value,
        "ge": actual >= value,
        "lt": actual < value,
        "le": actual <= value,
    }[op]


def create_okta_app(state: OktaState) -> Flask:
    app = Flask("okta-compatible")
    window = {"start": time.time(), "used": 0}

    def rate_headers(response: Response) -> Response:
        with state.lock:
            if time.time() - window["start"] >= 60:
                window["start"], window["used"] = time.time(), 0
            reset = int(window["start"] + 60)
            response.headers["X-Rate-Limit-Limit"] = str(state.rate_limit)
            response.headers["X-Rate-Limit-Remaining"] = str(
                max(state.rate_limit - window["used"], 0)
            )
            response.headers["X-Rate-Limit-Reset"] = str(reset)
        response.headers["Date"] = email.utils.formatdate(usegmt=True)
        return response

    def error(status: int, code: str, summary: str) -> Response:
        body = {
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": "oae" + uuid.uuid4().hex[:20],
            "errorCauses": [],
        }
        return rate_headers(Response(json.dumps(body), status=status, mimetype="application/json"))

    @app.before_request
    def gate():
        path = request.path
        with state.lock:
            state.requests[path] += 1
            state.requests["total"] += 1
            window["used"] += 1
            fault = next((f for f in state.faults if path.startswith(f.path) and f.times), None)
            if fault is not None and fault.skip:
                fault.skip, fault = fault.skip - 1, None
            if fault is not None:
                fault.times -= 1
        authorization = request.headers.get("Authorization", "")
        token = re.match(r"^(?:SSWS|Bearer)\s*(\S+)$", authorization)
        if token is None or token.group(1) != state.token:
            return error(401, "E0000011", "Invalid token provided")
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.body is not None:
                return rate_headers(
                    Response(fault.body, status=fault.status, mimetype="application/json")
                )
            if fault.status == 429:
                response = error(
                    429, "E0000047", "API call exceeded rate limit due to too many requests."
                )
                response.headers["X-Rate-Limit-Remaining"] = "0"
                response.headers["X-Rate-Limit-Reset"] = str(int(time.time()) + 1)
                return response
            if fault.status >= 400:
                return error(fault.status, "E0000009", "Internal Server Error")
        return None

    def page(
        items: list[dict], limit_default: int, limit_max: int, positions: dict | None = None
    ) -> Response:
        limit = min(int(request.args.get("limit", limit_default)), limit_max)
        after = request.args.get("after")
        start = 0
        if after:
            positions = positions or {item["id"]: i for i, item in enumerate(items)}
            start = positions[after] + 1 if after in positions else len(items)
        chunk = items[start : start + limit]
        response = rate_headers(
            Response(json.dumps(chunk), status=200, mimetype="application/json")
        )
        base = request.host_url.rstrip("/") + request.path
        params = {k: v for k, v in request.args.items() if k != "after"}
        response.headers.add("Link", f'<{base}?{urlencode(params)}>; rel="self"')
        if start + limit < len(items):
            params["after"] = chunk[-1]["id"]
            response.headers.add("Link", f'<{base}?{urlencode(params)}>; rel="next"')
        return response

    @app.get("/api/v1/users")
    def users():
        search = request.args.get("search")
        expression = search or request.args.get("filter")
        listed, positions = state.listing(
            f"users:{bool(search)}",
            expression,
            lambda: [
                u
                for u in state.users.values()
                if matches(expression, u) and (search or u["status"] != "DEPROVISIONED")
            ],
        )
        return page(listed, 200, 200, positions)

    @app.get("/api/v1/users/<user_id>")
    def user(user_id):
        with state.lock:
            found = state.users.get(user_id)
        if found is None:
            return error(404, "E0000007", f"Not found: Resource not found: {user_id} (User)")
        return rate_headers(Response(json.dumps(found), mimetype="application/json"))

    @app.get("/api/v1/groups")
    def groups():
        expression = request.args.get("search") or request.args.get("filter")
        listed, positions = state.listing(
            "groups",
            expression,
            lambda: [g for g in state.groups.values() if matches(expression, g)],
        )
        return page(listed, 10_000, 10_000, positions)

    @app.get("/api/v1/groups/<group_id>")
    def group(group_id):
        with state.lock:
            found = state.groups.get(group_id)
        if found is None:
            return error(404, "E0000007", f"Not found: Resource not found: {group_id} (UserGroup)")
        return rate_headers(Response(json.dumps(found), mimetype="application/json"))

    @app.get("/api/v1/groups/<group_id>/users")
    def group_users(group_id):
        with state.lock:
            if group_id not in state.groups:
                return error(
                    404, "E0000007", f"Not found: Resource not found: {group_id} (UserGroup)"
                )
            listed = [state.users[u] for u in state.members[group_id]]
        return page(listed, 1000, 1000)

    @app.delete("/api/v1/groups/<group_id>/users/<user_id>")
    def unassign(group_id, user_id):
        if group_id not in state.groups:
            return error(404, "E0000007", "Not found")
        state.remove_member(group_id, user_id)
        return rate_headers(Response(status=204))

    @app.get("/api/v1/logs")
    def logs():
        since = request.args.get("since", EPOCH)
        until = request.args.get("until")
        expression = request.args.get("filter")
        after = request.args.get("after")
        limit = min(int(request.args.get("limit", 100)), 1000)
        with state.lock:
            listed = [
                e
                for e in state.logs
                if e["published"] >= since
                and (until is None or e["published"] < until)
                and matches(expression, e)
            ]
        start = 0
        if after:
            ids = [e["uuid"] for e in listed]
            start = ids.index(after) + 1 if after in ids else 0
        chunk = listed[start : start + limit]
        response = rate_headers(Response(json.dumps(chunk), mimetype="application/json"))
        base = request.host_url.rstrip("/") + request.path
        params = {k: v for k, v in request.args.items() if k != "after"}
        response.headers.add("Link", f'<{base}?{urlencode(params)}>; rel="self"')
        # Polling (no `until`) always has a next link: where to ask next time.
        last = chunk[-1]["uuid"] if chunk else after
        if until is None or start + limit < len(listed):
            next_params = dict(params)
            if last:
                next_params["after"] = last
            response.headers.add("Link", f'<{base}?{urlencode(next_params)}>; rel="next"')
        return response

    return app


class OktaServer:
    """The app above on 127.0.0.1, in a thread, for the real SDK to talk to."""

    def __init__(self, state: OktaState | None = None) -> None:
        self.state = state or OktaState()
        self._server = make_server("127.0.0.1", 0, create_okta_app(self.state), threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OktaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(5)
