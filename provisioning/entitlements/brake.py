"""The mass-revocation brake: one change revoking too much of all access waits for an admin.

A reconciliation, a mapping change or a group deletion that would revoke more
than ``share`` of all live grants (default 10%, and never fewer than
``minimum`` revocations, default 100, so that small organisations are not
braked on every edit) is held: the facts change, the grants stay, and a
:class:`~provisioning.entitlements.models.RevocationHold` records who would
lose what, until an admin confirms it
(:func:`provisioning.entitlements.holds.confirm`, audited). Grants that
are created or changed in level go ahead. Explicit HR offboardings, expiry and
deactivations are never braked: nothing engages a brake for them.

A brake is engaged on a session (:func:`applied`), with the limits of the
settings its caller was handed; the engine consults it on every run in that
session. One brake can span several transactions (a
reconciliation run): what it let through counts against the same limit, and
once it has held something, it holds the rest of the run too, in one hold. So
a run that removes memberships one by one revokes up to the limit, then holds
everything after: the damage a wrong run can do is capped at the limit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.entitlements.models import Grant, HoldState, RevocationHold
from provisioning.settings import DEFAULTS, Settings

_KEY = "provisioning.brake"


@dataclass
class Brake:
    """The brake of one change (or one reconciliation run), with its limits
    (PROVISIONING_MASS_REVOCATION_SHARE and _MINIMUM: :func:`new`)."""

    cause: str
    share: float
    minimum: int
    revoked: int = 0  # revocations let through so far
    held: int = 0  # revocations held back so far
    live: int | None = None  # live grants when first needed
    hold_id: int | None = None


def new(cause: str, settings: Settings = DEFAULTS) -> Brake:
    """A brake for ``cause`` with the limits ``settings`` state."""
    return Brake(cause, settings.mass_revocation_share, settings.mass_revocation_minimum)


@contextmanager
def applied(session: Session, brake: Brake | str, settings: Settings = DEFAULTS) -> Iterator[Brake]:
    """Engage ``brake`` (or a new one for that cause, with ``settings``' limits) on
    ``session`` for the block.

    An outer brake already engaged on the session stays in charge.
    """
    outer = session.info.get(_KEY)
    if outer is not None:
        yield outer
        return
    engaged = new(brake, settings) if isinstance(brake, str) else brake
    session.info[_KEY] = engaged
    try:
        yield engaged
    finally:
        session.info.pop(_KEY, None)


def review(session: Session, origin: Origin, revoked: Sequence[Any]) -> int | None:
    """Called by the engine with the revocations it is about to make.

    Returns None when they may go ahead, or the id of the hold that now
    keeps them (the caller then leaves those grants alone).
    """
    brake: Brake | None = session.info.get(_KEY)
    if brake is None or not revoked:
        return None
    count = len(revoked)
    if brake.hold_id is None:
        if brake.revoked + count <= brake.minimum:
            brake.revoked += count
            return None
        if brake.live is None:
            # Live grants when the brake was engaged: now, plus what it already let through.
            live = session.scalar(select(func.count(Grant.id)).where(Grant.revoked_at.is_(None)))
            brake.live = live + brake.revoked
        if brake.revoked + count <= brake.share * brake.live:
            brake.revoked += count
            return None
    brake.held += count
    users = sorted({str(change.user_id) for change in revoked})
    hold = session.get(RevocationHold, brake.hold_id) if brake.hold_id else None
    if hold is None:
        hold = RevocationHold(
            cause=brake.cause,
            actor=origin.actor,
            source=str(origin.source),
            user_ids=users,
            revocations=count,
            active_grants=brake.live or 0,
            share=brake.share,
            state=HoldState.HELD,
        )
        session.add(hold)
        session.flush()
        brake.hold_id = hold.id
    else:
        hold.user_ids = sorted(set(hold.user_ids) | set(users))
        hold.revocations += count
    record(
        session,
        origin,
        [
            Entry(
                "revocations.held",
                "revocation_hold",
                str(hold.id),
                reason=brake.cause,
                after={
                    "revocations": count,
                    "users": len(users),
                    "live_grants": brake.live,
                    "share": brake.share,
                },
            )
        ],
    )
    return hold.id
