"""Write-back to Okta (off unless PROVISIONING_OKTA_WRITEBACK): remove a leaver from the
Okta groups that granted connector access, so Okta stops re-asserting them."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from provisioning.audit.log import Entry, Origin, Source, record
from provisioning.database import Database, utcnow
from provisioning.entitlements.models import Mapping
from provisioning.identity.models import Group, Membership, User
from provisioning.offboarding.models import Offboarding, OffboardingState
from provisioning.okta.client import OktaClient, OktaError

ORIGIN = Origin(actor="okta-writeback", source=Source.OKTA_SYNC)


def granting_groups(database: Database, user_id: uuid.UUID) -> list[str]:
    """Okta ids of the mapped groups the user is (or, once offboarded, was last) a member of."""
    with database.reader() as session:
        return list(
            session.scalars(
                select(Group.external_id)
                .join(Membership, Membership.group_id == Group.id)
                .join(Mapping, Mapping.group_id == Group.id)
                .where(Membership.user_id == user_id, Group.external_id.is_not(None))
                .distinct()
                .order_by(Group.external_id)
            )
        )


def remove_from_granting_groups(
    database: Database, client: OktaClient, user_id: uuid.UUID
) -> dict[str, str]:
    """Ask Okta to remove the user from each granting group; the outcome per group, audited.

    A group or membership Okta no longer has counts as done. A failure for
    one group does not stop the others; it is reported and audited.
    """
    with database.reader() as session:
        okta_user = session.scalar(select(User.external_id).where(User.id == user_id))
    if not okta_user:
        return {}
    outcomes: dict[str, str] = {}
    for group in granting_groups(database, user_id):
        try:
            client.remove_member(group, okta_user)
            outcomes[group] = "removed"
        except OktaError as exc:
            outcomes[group] = "already gone" if exc.status == 404 else f"failed: {exc}"
    with database.transaction() as session:
        record(
            session,
            ORIGIN,
            [
                Entry(
                    "okta.groups_removed",
                    "user",
                    str(user_id),
                    user_id=user_id,
                    after={"okta_user": okta_user, "groups": outcomes},
                )
            ],
        )
    return outcomes


def write_back_offboardings(database: Database, client: OktaClient) -> dict[str, int]:
    """Remove every HR- or admin-offboarded person from their granting Okta groups, once.

    Runs after the revocation has committed (never inside it: an Okta
    outage must not hold back a revocation); each offboarding records when
    and how its write-back went, so none is done twice and none is skipped.
    """
    with database.reader() as session:
        pending = session.execute(
            select(Offboarding.id, Offboarding.user_id).where(
                Offboarding.state == OffboardingState.DONE,
                Offboarding.source.in_([str(Source.HR), str(Source.ADMIN)]),
                Offboarding.okta_writeback_at.is_(None),
            )
        ).all()
    for offboarding_id, user_id in pending:
        outcomes = remove_from_granting_groups(database, client, user_id)
        with database.transaction() as session:
            offboarding = session.get(Offboarding, offboarding_id)
            offboarding.okta_writeback_at, offboarding.okta_writeback = utcnow(), outcomes
    return {"offboardings": len(pending)}
