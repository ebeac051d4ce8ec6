"""Manual exceptions as a security team reads them: their state, and the filters over them."""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, or_, select

from provisioning import text
from provisioning.connectors.models import Connector
from provisioning.entitlements.models import ManualException
from provisioning.entitlements.sources import EXCEPTIONS, withdrawn
from provisioning.identity.models import User


class ExceptionState(enum.StrEnum):
    """Where an exception stands: ``active`` while unrevoked and unexpired (alive, as
    :data:`~provisioning.entitlements.sources.EXCEPTIONS` says; an access review may still
    have withdrawn it, which :func:`listed` tells apart), ``revoked`` once an admin ended
    it, ``expired`` once its time ran out unrevoked."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


def state(now: Any) -> ColumnElement[str]:
    """SQL: the :class:`ExceptionState` of a ``manual_exceptions`` row at ``now``."""
    return case(
        (and_(*EXCEPTIONS.alive(now)), ExceptionState.ACTIVE.value),
        (ManualException.revoked_at.is_not(None), ExceptionState.REVOKED.value),
        else_=ExceptionState.EXPIRED.value,
    )


def naming(reference: str) -> ColumnElement[bool]:
    """SQL: the user (any state) is the one ``reference`` names: our id, Okta id
    (``externalId``), userName or email (these two without regard to case)."""
    folded = text.fold(reference)
    named = [
        User.external_id == reference,
        User.user_name_key == folded,
        User.email_key == folded,
    ]
    with contextlib.suppress(ValueError):
        named.append(User.id == uuid.UUID(reference))
    return or_(*named)


@dataclass(frozen=True)
class ExceptionFilter:
    """Which exceptions to list; every criterion given must hold (None: any)."""

    user: str | None = None
    user_id: uuid.UUID | None = None
    connector: str | None = None
    state: ExceptionState | None = ExceptionState.ACTIVE
    expires_before: dt.datetime | None = None
    expires_after: dt.datetime | None = None
    created_by: str | None = None


def listed(criteria: ExceptionFilter, now: dt.datetime) -> Select:
    """Rows of (exception, its user's userName, its connector's slug, its state at ``now``,
    whether an access review withdrew it since) meeting ``criteria``, unordered.
    ``expires_before`` is exclusive, ``expires_after`` inclusive, so that two adjacent
    windows split the exceptions between them."""
    current = state(now)
    statement = (
        select(
            ManualException,
            User.user_name,
            Connector.slug,
            current.label("state"),
            withdrawn(
                ManualException.user_id, ManualException.connector_id, ManualException.created_at
            ).label("withdrawn"),
        )
        .join(User, User.id == ManualException.user_id)
        .join(Connector, Connector.id == ManualException.connector_id)
    )
    if criteria.user is not None:
        statement = statement.where(naming(criteria.user))
    if criteria.user_id is not None:
        statement = statement.where(ManualException.user_id == criteria.user_id)
    if criteria.connector is not None:
        statement = statement.where(Connector.slug == criteria.connector)
    if criteria.state is not None:
        statement = statement.where(current == criteria.state.value)
    if criteria.expires_before is not None:
        statement = statement.where(ManualException.expires_at < criteria.expires_before)
    if criteria.expires_after is not None:
        statement = statement.where(ManualException.expires_at >= criteria.expires_after)
    if criteria.created_by is not None:
        statement = statement.where(ManualException.created_by == criteria.created_by)
    return statement
