"""A review revocation lifted by an admin: the access comes back through the engine and a
downstream target is told, as of any grant."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from provisioning.database import utcnow
from provisioning.delivery.worker import Deliverer
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.reviews import campaigns
from provisioning.reviews.models import ReviewItem
from provisioning.settings import load
from tests.delivery.conftest import RECEIVERS, add_target
from tests.org import Org, closed_review


@pytest.fixture
def deliverer(database, receiver):
    add_target(database, "webhook", receiver.url, receiver.secret)
    settings = load(
        database_url=database.engine.url.render_as_string(hide_password=False),
        delivery_allowed_networks=RECEIVERS,
    )
    worker = Deliverer(database, settings)
    yield worker
    worker.stop()


def live(database, user_id) -> list[str]:
    from provisioning.connectors.models import Connector

    with database.reader() as session:
        return list(
            session.scalars(
                select(Connector.slug)
                .join(Grant, Grant.connector_id == Connector.id)
                .where(Grant.user_id == user_id, Grant.revoked_at.is_(None))
                .order_by(Connector.slug)
            )
        )


def test_a_lifted_revocation_is_granted_again_and_the_target_told(
    database, origin, receiver, deliverer
):
    with database.transaction() as session:
        org = Org(session, origin)
        group = org.group("eng")
        github, wiki = org.connector("github"), org.connector("wiki")
        for connector in (github, wiki):
            create_mapping(session, origin, group, connector, "read")
        lee = org.user("lee@example.com")
        org.join(lee, group)
        closed_review(session, origin, [github.id])
        item_id, lee_id = session.scalar(select(ReviewItem.id)), lee.id
    assert live(database, lee_id) == ["wiki"]
    deliverer.drain()
    assert [e["data"]["grant"]["connector"] for e in receiver.of_type("grant.revoked")] == [
        "github"
    ]
    told = len(receiver.of_type("grant.created"))

    with database.transaction() as session:
        item = session.get(ReviewItem, item_id)
        with pytest.raises(campaigns.ReviewError):
            campaigns.lift(session, origin, item, "  ")
        revocation, diff = campaigns.lift(session, origin, item, "rejoined the on-call rota")
        assert [c.connector_id for c in diff.created] == [item.connector_id]
        assert revocation.lifted_by == origin.actor and revocation.lifted_at <= utcnow()
        with pytest.raises(campaigns.NotLiftable, match="lifted already"):
            campaigns.lift(session, origin, item, "again")
    assert live(database, lee_id) == ["github", "wiki"]
    deliverer.drain()
    (granted,) = receiver.of_type("grant.created")[told:]
    assert granted["data"]["grant"]["connector"] == "github"
    assert granted["data"]["user"]["userName"] == "lee@example.com"
