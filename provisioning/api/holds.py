"""/api/v1/revocation-holds: mass revocations the brake held, and their confirmation."""

from __future__ import annotations

from flask import Response
from sqlalchemy import select

from provisioning.api import schemas
from provisioning.api.edge import (
    PREFIX,
    database,
    fail,
    found,
    json_response,
    listing,
    origin,
    route,
)
from provisioning.entitlements import holds
from provisioning.entitlements.models import HoldState, RevocationHold
from provisioning.tokens.credentials import Scope

READ = Scope.ADMIN_READ.value
WRITE = Scope.ADMIN_WRITE.value
TAG = "revocation holds"


def _out(hold: RevocationHold) -> schemas.HoldOut:
    return schemas.HoldOut(
        id=hold.id,
        url=f"{PREFIX}/revocation-holds/{hold.id}",
        cause=hold.cause,
        actor=hold.actor,
        source=hold.source,
        users=len(hold.user_ids),
        revocations=hold.revocations,
        active_grants=hold.active_grants,
        share=hold.share,
        state=str(hold.state),
        held_at=hold.held_at,
        decided_by=hold.decided_by,
        decided_at=hold.decided_at,
        revoked=hold.revoked,
    )


@route("GET", "/revocation-holds", READ, tag=TAG, ok={200: schemas.HoldPage})
def list_holds(query: schemas.HoldQuery) -> Response:
    """Holds by id, optionally only those still waiting (state=held)."""
    statement = select(RevocationHold)
    if query.state is not None:
        statement = statement.where(RevocationHold.state == query.state)
    with database().reader() as session:
        return listing(session, statement, [RevocationHold.id], query, schemas.HoldPage, _out)


@route(
    "GET",
    "/revocation-holds/<int:hold_id>",
    READ,
    tag=TAG,
    ok={200: schemas.HoldOut},
    problems=[404],
)
def get_hold(path: schemas.HoldPath) -> Response:
    with database().reader() as session:
        return json_response(_out(found(session, RevocationHold, path.hold_id, "revocation hold")))


@route(
    "POST",
    "/revocation-holds/<int:hold_id>/confirm",
    WRITE,
    tag=TAG,
    ok={200: schemas.HoldOut},
    problems=[404, 409],
    summary="Carry out held revocations: what is still unjustified for those users is revoked",
)
def confirm_hold(path: schemas.HoldPath, body: schemas.ReasonIn) -> Response:
    with database().transaction() as session:
        hold = found(session, RevocationHold, path.hold_id, "revocation hold", lock=True)
        if hold.state != HoldState.HELD:
            fail(409, "Conflict", f"revocation hold {hold.id} is {hold.state}", "conflict")
        holds.confirm(session, origin(), hold, body.reason)
        result = _out(hold)
    return json_response(result)
