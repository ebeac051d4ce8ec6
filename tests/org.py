"""Building organisations for tests through the domain's own functions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from provisioning.audit.log import Origin
from provisioning.connectors.catalogue import add_action, create_connector
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.identity.models import Group, MembershipSource, User
from provisioning.people.lifecycle import create_group, create_user, set_membership
from provisioning.requests.models import AccessRequest, RequestKind, RequestState


class Org:
    """A test organisation written through the domain, one session at a time."""

    def __init__(self, session: Session, origin: Origin) -> None:
        self.session = session
        self.origin = origin
        self._n = 0

    def user(self, user_name: str | None = None, **fields: Any) -> User:
        self._n += 1
        return create_user(
            self.session, self.origin, user_name=user_name or f"user{self._n}@example.com", **fields
        )

    def group(self, name: str | None = None) -> Group:
        self._n += 1
        return create_group(self.session, self.origin, display_name=name or f"group-{self._n}")

    def join(self, user: User, group: Group, **kwargs: Any) -> Any:
        kwargs.setdefault("source", MembershipSource.SCIM)
        return set_membership(self.session, self.origin, user, group, True, **kwargs)

    def leave(self, user: User, group: Group, **kwargs: Any) -> Any:
        kwargs.setdefault("source", MembershipSource.SCIM)
        return set_membership(self.session, self.origin, user, group, False, **kwargs)

    def connector(self, slug: str | None = None, actions: tuple = (), **fields: Any) -> Connector:
        self._n += 1
        spec: dict[str, Any] = {
            "slug": slug or f"connector-{self._n}",
            "name": slug or f"Connector {self._n}",
            "kind": "remote",
            "capability": "read_write",
            "publisher": "directory",
            "security_review": "approved",
            "interfaces": ["web", "mobile", "desktop", "code"],
            "enabled": True,
        }
        spec.update(fields)
        connector = create_connector(self.session, self.origin, **spec)
        for name, kind, policy in actions:
            add_action(
                self.session, self.origin, connector, name=name, kind=kind, org_policy=policy
            )
        return connector

    def rule(self, name: str, these: list, those: list, reason: str) -> Any:
        """A separation-of-duties rule (``these`` x ``those``: connectors or actions)."""
        from provisioning.entitlements import separation

        return separation.create_rule(
            self.session,
            self.origin,
            name=name,
            these=these,
            those=those,
            owner="risk@example.com",
            reason=reason,
        )


def call_task(user: User, connector_id: int, action: str, **row: Any) -> AccessRequest:
    """A call approval task of ``user``'s (a row, for tests of what reads it), pending for a
    day unless ``row`` says otherwise."""
    fields: dict[str, Any] = {
        "user_id": user.id,
        "requested_by_id": user.id,
        "requested_by": user.user_name,
        "connector_id": connector_id,
        "access_level": "read_write",
        "actions": [action],
        "justification": "a call",
        "duration_days": 0,
        "approvers": ["owner"],
        "state": RequestState.PENDING,
        "deadline": utcnow() + dt.timedelta(days=1),
        "kind": RequestKind.CALL,
        "call": {},
        **row,
    }
    return AccessRequest(**fields)


def later(days: float = 1) -> dt.datetime:
    return utcnow() + dt.timedelta(days=days)


def mapped_okta_group(database, origin: Origin, okta_group_id: str, slug: str = "github") -> Group:
    """An Okta group (by its Okta id) mapped to a new connector named ``slug``."""
    from provisioning.entitlements.mappings import create_mapping

    with database.transaction() as session:
        connector = Org(session, origin).connector(slug)
        group = create_group(session, origin, display_name=slug, external_id=okta_group_id)
        create_mapping(session, origin, group, connector, "read")
    return group


def holders(database) -> set[str]:
    """The external ids of users holding at least one live grant."""
    from sqlalchemy import select

    from provisioning.entitlements.models import Grant

    with database.reader() as session:
        rows = session.execute(
            select(User.external_id)
            .join(Grant, Grant.user_id == User.id)
            .where(Grant.revoked_at.is_(None))
        )
        return {external_id for (external_id,) in rows}


def closed_review(session: Session, origin: Origin, connector_ids: list[int] | None = None):
    """A review campaign over the live grants of ``connector_ids`` (None: all) that nobody
    answered, closed under ``no_response=revoke``: every item revoked."""
    from provisioning.reviews import campaigns
    from provisioning.reviews.models import CampaignTrigger, NoResponse

    campaign = campaigns.create_campaign(
        session,
        origin,
        name="unanswered",
        trigger=CampaignTrigger.MANUAL,
        deadline=later(1),
        no_response=NoResponse.REVOKE,
        connector_ids=connector_ids,
    )
    return campaigns.close_campaign(session, origin, campaign.id)
