"""The record of an offboarding: what it revoked, the message telling the targets, and the
record of an IdP deactivation."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.audit.log import Origin, Source
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.delivery import outbox
from provisioning.entitlements import engine
from provisioning.identity.models import User
from provisioning.offboarding.models import Offboarding, OffboardingState


def revoked_by(session: Session, diff: engine.Diff) -> list[dict[str, object]]:
    """The grants ``diff`` revoked, as an offboarding keeps them."""
    slugs = dict(session.execute(select(Connector.id, Connector.slug)).all())
    return [
        {"grant_id": c.grant_id, "connector": slugs[c.connector_id], "access_level": c.access_level}
        for c in diff.revoked
    ]


def tell(session: Session, kind: str, user: User, offboarding: Offboarding) -> list[int]:
    """Enqueue the user event of an offboarding for every target; return the message ids."""
    data = {
        "offboarding": {
            "id": offboarding.id,
            "source": offboarding.source,
            "reason": offboarding.reason,
            "ticket": offboarding.ticket,
            "revoked": len(offboarding.revoked),
        }
    }
    return outbox.enqueue(session, [outbox.Event(kind, user.id, data)])


# Deactivations from the IdP leave a record of what they revoked, under these sources.
_IDP_SOURCES = {
    Source.OKTA_HOOK: "okta",
    Source.OKTA_SYNC: "okta",
    Source.SCIM: "scim",
}


def record_deactivation(
    session: Session, origin: Origin, user: User, diff: engine.Diff
) -> Offboarding | None:
    """The offboarding record of an Okta or SCIM deactivation: proof of what it revoked.

    Not sticky: the IdP's own reactivation restores access (offboarded_at is
    left alone), unlike an HR or admin offboarding.
    """
    source = _IDP_SOURCES.get(origin.source)
    if source is None:
        return None
    now = utcnow()
    by_okta_id = user.external_id is not None
    offboarding = Offboarding(
        user_id=user.id,
        identified_by="externalId" if by_okta_id else "userName",
        identifier=user.external_id if by_okta_id else user.user_name,
        reason=origin.reason or f"deactivated through {source}",
        source=source,
        requested_by=origin.actor,
        requested_at=now,
        effective_at=now,
        executed_at=now,
        state=OffboardingState.DONE,
        revoked=revoked_by(session, diff),
    )
    session.add(offboarding)
    session.flush()
    offboarding.outbox_ids = diff.messages + tell(session, "user.offboarded", user, offboarding)
    return offboarding
