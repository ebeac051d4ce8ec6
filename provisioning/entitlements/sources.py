"""The sources of access, stated once: what may justify a person's access to a connector.

A *source* is a row that can justify one user's access to one connector:

- a **mapping**, through a present membership of its group, while unexpired;
- a **manual exception**, while neither revoked nor expired;
- an **approved access request**, until the expiry its approval set
  (:mod:`provisioning.requests`).

Either stops justifying the access once an access review (or the dormant-access
remediation) withdrew it: a :class:`~provisioning.entitlements.models.ReviewRevocation`
of that user and connector at or after the source's creation, unless an admin lifted
it (:func:`withdrawn`).

The engine (:func:`provisioning.entitlements.engine.justifications`), the
decision path, the access matrix, the stale-access scan, access reviews and the
expiry job all read :data:`SOURCES`, so a new source of access is one more
:class:`Source` here and nothing else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    exists,
    literal_column,
    null,
    or_,
    select,
)

from provisioning.entitlements.models import ManualException, Mapping, ReviewRevocation
from provisioning.identity.models import Group, Membership
from provisioning.requests.models import AccessRequest, RequestState


def withdrawn(user_id: Any, connector_id: Any, created_at: Any) -> ColumnElement[bool]:
    """SQL condition: an access review revoked the user's access to the connector after a
    source created at ``created_at`` existed, and nobody lifted that revocation, so that
    source no longer justifies it."""
    return (
        exists()
        .where(
            ReviewRevocation.user_id == user_id,
            ReviewRevocation.connector_id == connector_id,
            ReviewRevocation.revoked_at >= created_at,
            ReviewRevocation.lifted_at.is_(None),
        )
        # Everything else it names belongs to the enclosing queries, however deeply nested.
        .correlate_except(ReviewRevocation)
    )


@dataclass(frozen=True)
class Source:
    """One kind of source: its rows, its columns, and when a row is live.

    ``via`` names the kind in reasons (``mapping:ID``); the columns are SQL
    expressions over the rows ``rows`` selects from. ``group`` and
    ``justification`` are what a reader is shown of a source (NULL where the
    kind has none).
    """

    via: str
    user_id: Any
    connector_id: Any
    ref: Any
    access_level: Any
    actions: Any
    policies: Any
    expires_at: Any
    created_at: Any
    group: Any
    justification: Any
    rows: Callable[[Select], Select]
    alive: Callable[[Any], Iterable[ColumnElement[bool]]]
    # The rows whose time ran out by ``now`` (and nothing else ended): the expiry job's.
    ended: Callable[[Any], Iterable[ColumnElement[bool]]]

    @property
    def label(self) -> ColumnElement[str]:
        return literal_column(f"'{self.via}'").label("via")

    def select(self, *columns: Any, now: Any = None) -> Select:
        """``columns`` over this kind's rows: every row, or (``now`` given: a time or a bind
        parameter) only those that justify access at ``now``."""
        statement = self.rows(select(*columns))
        if now is None:
            return statement
        return statement.where(
            *self.alive(now), ~withdrawn(self.user_id, self.connector_id, self.created_at)
        )

    def justifies(self, user_id: Any, connector_id: Any, now: Any) -> ColumnElement[bool]:
        """SQL condition: a live source of this kind justifies ``user_id``'s access to
        ``connector_id`` (correlated to the enclosing query)."""
        return (
            self.select(self.user_id, now=now)
            .where(self.user_id == user_id, self.connector_id == connector_id)
            .exists()
        )


MAPPINGS = Source(
    via="mapping",
    user_id=Membership.user_id,
    connector_id=Mapping.connector_id,
    ref=Mapping.id,
    access_level=Mapping.access_level,
    actions=Mapping.actions,
    policies=Mapping.policies,
    expires_at=Mapping.expires_at,
    created_at=Mapping.created_at,
    group=select(Group.display_name).where(Group.id == Mapping.group_id).scalar_subquery(),
    justification=null(),
    rows=lambda s: s.select_from(Membership).join(Mapping, Mapping.group_id == Membership.group_id),
    alive=lambda now: (
        Membership.present.is_(True),
        or_(Mapping.expires_at.is_(None), Mapping.expires_at > now),
    ),
    ended=lambda now: (Mapping.expires_at <= now,),
)

EXCEPTIONS = Source(
    via="exception",
    user_id=ManualException.user_id,
    connector_id=ManualException.connector_id,
    ref=ManualException.id,
    access_level=ManualException.access_level,
    actions=ManualException.actions,
    policies=null(),
    expires_at=ManualException.expires_at,
    created_at=ManualException.created_at,
    group=null(),
    justification=ManualException.justification,
    rows=lambda s: s.select_from(ManualException),
    alive=lambda now: (ManualException.revoked_at.is_(None), ManualException.expires_at > now),
    ended=lambda now: (ManualException.expires_at <= now, ManualException.revoked_at.is_(None)),
)

_APPROVED = AccessRequest.state == RequestState.APPROVED

REQUESTS = Source(
    via="request",
    user_id=AccessRequest.user_id,
    connector_id=AccessRequest.connector_id,
    ref=AccessRequest.id,
    access_level=AccessRequest.access_level,
    actions=AccessRequest.actions,
    policies=null(),
    expires_at=AccessRequest.expires_at,
    created_at=AccessRequest.granted_at,
    group=null(),
    justification=AccessRequest.justification,
    rows=lambda s: s.select_from(AccessRequest),
    alive=lambda now: (_APPROVED, AccessRequest.expires_at > now),
    ended=lambda now: (_APPROVED, AccessRequest.expires_at <= now),
)

# Every kind of source of access.
SOURCES = (MAPPINGS, EXCEPTIONS, REQUESTS)


def union(build: Callable[[Source], Select]) -> Select | CompoundSelect:
    """One ``UNION ALL`` of ``build(source)`` for every kind of source."""
    first, *rest = (build(source) for source in SOURCES)
    return first.union_all(*rest) if rest else first


def justified(user_id: Any, connector_id: Any, now: dt.datetime) -> list[ColumnElement[bool]]:
    """SQL conditions, one per kind, each true when a live source of that kind justifies
    ``user_id``'s access to ``connector_id``. The NOT of each is an anti-join the planners
    run in one pass, which the NOT of their OR would not be."""
    return [source.justifies(user_id, connector_id, now) for source in SOURCES]
