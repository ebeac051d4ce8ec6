"""Okta event hooks: one-time verification, authenticated durable deliveries.

Okta authenticates a hook with a static header (``authScheme HEADER``),
gives an endpoint 3 seconds, retries once on a 5xx and never on a 4xx. So a
delivery is committed to the inbox before the 200, a 5xx is answered only
when it could not be stored, and a bad secret or a body that is not an event
hook envelope gets a 4xx. What is wrong with one event of a delivery (the
console Preview's sample included) is settled when it is applied: that event
alone is parked, or recorded as a preview (:mod:`provisioning.okta.events`).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import Blueprint, Response, current_app, jsonify, request

from provisioning import metrics
from provisioning.database import Database
from provisioning.okta import inbox
from provisioning.settings import Settings
from provisioning.web import bodies
from provisioning.web.problems import TYPE_PREFIX, problem

okta_hooks = Blueprint("okta_hooks", __name__, url_prefix="/hooks/okta")

CHALLENGE_HEADER = "X-Okta-Verification-Challenge"


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def secret_digests(settings: Settings) -> list[bytes]:
    """The accepted secrets, kept only as digests (equal length, constant-time compare)."""
    return [_digest(secret) for secret in settings.okta_hook_secret_list]


def authenticated() -> bool:
    """The configured header carries one of the configured secrets (constant time)."""
    settings = current_app.extensions["provisioning.settings"]
    given = request.headers.get(settings.okta_hook_header)
    secrets = current_app.extensions["provisioning.okta_hook_digests"]
    if given is None or not secrets:
        return False
    offered = _digest(given)
    # Compare against every secret so the time taken does not tell which matched.
    matches = [hmac.compare_digest(offered, secret) for secret in secrets]
    return any(matches)


def _unauthorised() -> Response:
    metrics.HOOK_DELIVERIES.labels(result="unauthorised").inc()
    response = problem(401, "Unauthorized", "missing or wrong event hook secret")
    header = current_app.extensions["provisioning.settings"].okta_hook_header
    response.headers["WWW-Authenticate"] = f'Header realm="okta-event-hooks", name="{header}"'
    return response


@okta_hooks.get("/events")
def verify() -> Response:
    """Okta's one-time verification: echo the challenge header (name case-insensitive)."""
    if not authenticated():
        return _unauthorised()
    challenge = request.headers.get(CHALLENGE_HEADER)
    if not challenge:
        return problem(400, "Bad Request", f"missing {CHALLENGE_HEADER} header")
    return jsonify(verification=challenge)


@okta_hooks.post("/events")
def deliver() -> Response:
    """Store the delivery durably, answer, then apply it after the response."""
    started = time.perf_counter()
    if not authenticated():
        return _unauthorised()
    database: Database = current_app.extensions["provisioning.database"]
    body = bodies.raw()  # within the body limit: a larger one was refused (413) unread
    try:
        bodies.document(untyped_is_json=True)
    except bodies.Refused as refused:
        metrics.HOOK_DELIVERIES.labels(result="rejected").inc()
        if refused.code == 400:  # JSON no delivery can be: kept, rejected, for inspection
            inbox.reject(database, body, str(refused.description))
        detail = f"not an Okta event hook delivery: {refused.description}"
        return problem(refused.code, refused.name, detail, type=TYPE_PREFIX + refused.kind)
    try:
        receipt = inbox.receive(database, body)
    except inbox.EnvelopeError as exc:
        metrics.HOOK_DELIVERIES.labels(result="rejected").inc()
        return problem(400, "Bad Request", f"not an Okta event hook delivery: {exc}")
    except Exception:
        current_app.logger.exception("okta delivery could not be stored")
        metrics.HOOK_DELIVERIES.labels(result="unstored").inc()
        # A 5xx makes Okta retry once; nothing was acknowledged.
        return problem(503, "Service Unavailable", "the delivery could not be stored")
    metrics.HOOK_DELIVERIES.labels(result="duplicate" if receipt.duplicate else "stored").inc()
    response = Response(status=200)
    processor: inbox.Processor | None = current_app.extensions.get("provisioning.okta_inbox")
    if processor is not None and not receipt.duplicate:
        response.call_on_close(processor.notify)
    metrics.HOOK_ACK_SECONDS.observe(time.perf_counter() - started)
    return response
