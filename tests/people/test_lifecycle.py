"""Facts below, consequences above: the directory records and says what changed; the
lifecycle turns that into the engine's run, a review, an offboarding record."""

from __future__ import annotations

from sqlalchemy import func, select

from provisioning.audit.log import Origin, Source
from provisioning.audit.models import AuditEvent
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity import directory
from provisioning.identity.models import Membership, MembershipSource, User
from provisioning.offboarding.models import Offboarding
from provisioning.people import lifecycle
from provisioning.reviews.models import ReviewCampaign
from tests.org import Org

SCIM = Origin("okta-provisioning", Source.SCIM)


def live(session) -> set[tuple[str, str]]:
    return {
        (str(user_id), level)
        for user_id, level in session.execute(
            select(Grant.user_id, Grant.access_level).where(Grant.revoked_at.is_(None))
        )
    }


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_the_directory_records_a_fact_and_runs_none_of_its_consequences(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        eng = org.group("eng")
        create_mapping(session, origin, eng, org.connector("github"), "read")
        ada = org.user("ada@example.com", department="eng")
        change = directory.set_membership(
            session, SCIM, ada, eng, True, source=MembershipSource.SCIM
        )
        assert change == directory.Change(users=(ada.id,))
        # The fact and its audit event, and nothing that follows from them.
        assert session.get(Membership, (ada.id, eng.id)).present
        assert (
            session.scalar(select(func.count()).where(AuditEvent.action == "membership.added")) == 1
        )
        assert live(session) == set()
        # The lifecycle acts on what changed.
        assert len(lifecycle.follow(session, SCIM, change).created) == 1
        assert live(session) == {(str(ada.id), "read")}

        moved = directory.update_user(session, SCIM, ada, department="sales")
        assert moved.moved == {"department": ("eng", "sales")} and not moved.users
        assert count(session, ReviewCampaign) == 0  # the directory opens no review
        off = directory.set_active(session, SCIM, ada, False)
        assert off.deactivated is ada and live(session) == {(str(ada.id), "read")}
        assert count(session, Offboarding) == 0  # nor writes an offboarding record


def test_the_lifecycle_reviews_before_the_engine_revokes_and_records_the_deactivation(
    database, origin
):
    with database.transaction() as session:
        org = Org(session, origin)
        eng = org.group("eng")
        create_mapping(session, origin, eng, org.connector("github"), "read")
        ada = org.user("ada@example.com", department="eng", external_id="00uada")
        org.join(ada, eng)
        diff = lifecycle.update_user(session, SCIM, ada, department="sales", active=False)
        assert [c.user_id for c in diff.revoked] == [ada.id] and live(session) == set()
        # The review was opened over the grant the old role gave, before the revocation.
        (campaign,) = session.scalars(select(ReviewCampaign))
        assert campaign.context == {"department": ["eng", "sales"]}
        (record,) = session.scalars(select(Offboarding))
        assert (record.source, record.identifier, len(record.revoked)) == ("scim", "00uada", 1)
        assert session.get(User, ada.id).offboarded_at is None  # not sticky
