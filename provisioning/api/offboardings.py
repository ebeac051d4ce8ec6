"""/api/v1/offboardings: HR removes a person's access at once or on a date; admins reinstate."""

from __future__ import annotations

import time

from flask import Response, request
from sqlalchemy.orm import Session

from provisioning.api import schemas
from provisioning.api.edge import (
    changes,
    database,
    fail,
    found,
    json_response,
    not_found,
    origin,
    route,
)
from provisioning.audit.log import Source
from provisioning.delivery import outbox
from provisioning.identity.models import User
from provisioning.metrics import OFFBOARDING_COMMIT_SECONDS
from provisioning.offboarding import requests as domain
from provisioning.offboarding.models import Offboarding
from provisioning.tokens.credentials import Scope

HR = Scope.OFFBOARDING_WRITE.value
WRITE = Scope.ADMIN_WRITE.value
TAG = "offboarding"


def _out(
    session: Session, offboarding: Offboarding, notes: list[str] | None = None
) -> schemas.OffboardingOut:
    return schemas.OffboardingOut(
        id=offboarding.id,
        url=f"/api/v1/offboardings/{offboarding.id}",
        user_id=offboarding.user_id,
        identified_by=offboarding.identified_by,
        identifier=offboarding.identifier,
        reason=offboarding.reason,
        ticket=offboarding.ticket,
        source=offboarding.source,
        requested_by=offboarding.requested_by,
        requested_at=offboarding.requested_at,
        effective_at=offboarding.effective_at,
        state=str(offboarding.state),
        executed_at=offboarding.executed_at,
        cancelled_at=offboarding.cancelled_at,
        revoked=offboarding.revoked,
        targets=outbox.acknowledgements(session, offboarding.outbox_ids),
        notes=notes or [],
    )


@route(
    "POST",
    "/offboardings",
    HR,
    tag=TAG,
    ok={202: schemas.OffboardingOut},
    problems=[404, 409],
    summary="Remove all of a person's access, now or at effective_at (Idempotency-Key honoured)",
)
def create_offboarding(body: schemas.OffboardingIn) -> Response:
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 255:
        fail(422, "Unprocessable Content", "Idempotency-Key is too long", "invalid-request")
    identified_by = body.identified_by
    started = time.perf_counter()
    with database().transaction() as session:
        try:
            outcome = domain.request(
                session,
                origin(Source.HR),
                identified_by=identified_by,
                identifier=getattr(body, identified_by),
                reason=body.reason,
                ticket=body.ticket,
                effective_at=body.effective_at,
                idempotency_key=key,
            )
        except domain.UnknownPerson as exc:
            not_found(str(exc).removeprefix("no "))
        except domain.AmbiguousPerson as exc:
            fail(409, "Conflict", str(exc), "ambiguous-person", candidates=exc.candidates)
        notes = []
        if outcome.effective_now:
            notes.append("effective_at was in the past: carried out now")
        if outcome.replayed:
            notes.append("Idempotency-Key seen before: this is the earlier request, unchanged")
        result = _out(session, outcome.offboarding, notes)
    if result.state == "done" and not outcome.replayed:
        OFFBOARDING_COMMIT_SECONDS.observe(time.perf_counter() - started)
    response = json_response(result, status=202)
    response.headers["Location"] = result.url
    return response


@route(
    "GET",
    "/offboardings/<int:offboarding_id>",
    HR,
    tag=TAG,
    ok={200: schemas.OffboardingOut},
    problems=[404],
)
def get_offboarding(path: schemas.OffboardingPath) -> Response:
    """State, what was revoked, and per downstream target whether it acknowledged."""
    with database().reader() as session:
        offboarding = found(session, Offboarding, path.offboarding_id, "offboarding")
        return json_response(_out(session, offboarding))


@route(
    "POST",
    "/offboardings/<int:offboarding_id>/cancel",
    HR,
    tag=TAG,
    ok={200: schemas.OffboardingOut},
    problems=[404, 409],
    summary="Cancel a scheduled offboarding before it runs",
)
def cancel_offboarding(path: schemas.OffboardingPath, body: schemas.ReasonIn) -> Response:
    with database().transaction() as session:
        offboarding = found(session, Offboarding, path.offboarding_id, "offboarding")
        try:
            domain.cancel(session, origin(Source.HR), offboarding, body.reason)
        except domain.OffboardingError as exc:
            fail(409, "Conflict", str(exc), "conflict")
        result = _out(session, offboarding)
    return json_response(result)


@route(
    "POST",
    "/users/<uuid:user_id>/reinstate",
    WRITE,
    tag=TAG,
    ok={200: schemas.Changes},
    problems=[404, 409],
    summary="Lift an offboarding: access is derived again from the person's groups (audited)",
)
def reinstate_user(path: schemas.UserPath, body: schemas.ReasonIn) -> Response:
    with database().transaction() as session:
        user = found(session, User, path.user_id, "user")
        try:
            diff = domain.reinstate(session, origin(), user, body.reason)
        except domain.OffboardingError as exc:
            fail(409, "Conflict", str(exc), "conflict")
        result = schemas.Changes(**changes(session, diff, dry_run=False))
    return json_response(result)
