"""/api/v1/okta/parked-events: Okta events that could not be applied, as sent, with the reason."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from flask import Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select

from provisioning.api import schemas
from provisioning.api.edge import database, found, json_response, listing, route
from provisioning.okta.models import ParkedEvent
from provisioning.tokens.credentials import Scope

READ = Scope.ADMIN_READ.value
TAG = "okta"


class ParkedEventQuery(schemas.Input):
    event_type: Annotated[str, Field(max_length=128)] | None = None
    source: Literal["okta-hook", "okta-sync"] | None = None
    limit: schemas.Limit = 100
    cursor: schemas.Cursor | None = None


class ParkedEventPath(schemas.Input):
    parked_id: Annotated[int, Field(ge=1, le=schemas.INT32)]


class ParkedEventOut(BaseModel):
    """An event kept instead of applied; the rest of its delivery was applied."""

    id: int
    uuid: str | None = Field(description="Okta's uuid, when the event had a usable one")
    event_type: str | None
    source: str = Field(description="okta-hook (an event hook delivery) or okta-sync (catch-up)")
    delivery_id: int | None = Field(description="the inbox delivery it came in")
    reason: str
    event: Any = Field(description="the event as Okta sent it")
    parked_at: AwareDatetime


class ParkedEventPage(BaseModel):
    items: list[ParkedEventOut]
    next_cursor: str | None


def _out(parked: ParkedEvent) -> ParkedEventOut:
    return ParkedEventOut(
        id=parked.id,
        uuid=parked.uuid,
        event_type=parked.event_type,
        source=parked.source,
        delivery_id=parked.delivery_id,
        reason=parked.reason,
        event=parked.event,
        parked_at=parked.parked_at.astimezone(dt.UTC),
    )


@route("GET", "/okta/parked-events", READ, tag=TAG, ok={200: ParkedEventPage})
def list_parked_events(query: ParkedEventQuery) -> Response:
    """Okta events parked because they could not be applied, oldest first."""
    statement = select(ParkedEvent)
    if query.event_type is not None:
        statement = statement.where(ParkedEvent.event_type == query.event_type)
    if query.source is not None:
        statement = statement.where(ParkedEvent.source == query.source)
    with database().reader() as session:
        return listing(session, statement, [ParkedEvent.id], query, ParkedEventPage, _out)


@route(
    "GET",
    "/okta/parked-events/<int:parked_id>",
    READ,
    tag=TAG,
    ok={200: ParkedEventOut},
    problems=[404],
)
def get_parked_event(path: ParkedEventPath) -> Response:
    """One parked event: as Okta sent it, and why it was not applied."""
    with database().reader() as session:
        return json_response(_out(found(session, ParkedEvent, path.parked_id, "parked event")))
