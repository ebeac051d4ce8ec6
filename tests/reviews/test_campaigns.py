"""Access review campaigns: opened over live grants, decided, closed on their deadline through the
engine, and revocations that stay revoked."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select, update

from jobs.runner import run_job
from provisioning.audit.log import Origin, Source, verify
from provisioning.audit.models import AuditEvent
from provisioning.connectors.models import Connector, Interface
from provisioning.database import utcnow
from provisioning.entitlements import decisions, engine
from provisioning.entitlements.expiry import expire
from provisioning.entitlements.mappings import create_exception, create_mapping, delete_mapping
from provisioning.entitlements.models import Grant, ManualException, Mapping, ReviewRevocation
from provisioning.entitlements.policy import Decision
from provisioning.identity import directory
from provisioning.identity.models import Group, User
from provisioning.oversight.models import Finding
from provisioning.oversight.scan import scan
from provisioning.people.lifecycle import set_active, update_user
from provisioning.reviews import campaigns
from provisioning.reviews.models import (
    CampaignTrigger,
    NoResponse,
    ReviewCampaign,
    ReviewDecision,
    ReviewItem,
)
from provisioning.settings import load
from tests.org import Org, later
from tests.scim.conftest import ENTERPRISE, PATCH_OP, make_app, make_token

REVIEWER = Origin(actor="boss@example.com", source=Source.ADMIN)


def decide(session, origin, item, decision, comment=None, **kw):
    """A decision by the reviewer (REVIEWER, the person boss) or by an admin overriding."""
    if origin is REVIEWER:
        kw.setdefault("decider", directory.person(session, REVIEWER.actor))
    else:
        kw.setdefault("override", True)
    return campaigns.decide(session, origin, item, decision, comment, **kw)


@pytest.fixture
def team(database, origin):
    """Boss manages Ada and Bob; Cy's manager is unknown. One group gives GitHub (owned by
    the platform team) and Slack (no owner) to all three."""
    with database.transaction() as session:
        org = Org(session, origin)
        boss = org.user("boss@example.com", external_id="00uboss")
        ada = org.user("ada@example.com", department="eng", manager_id=str(boss.id))
        # Okta's profile managerId is the manager's Okta id.
        bob = org.user("bob@example.com", department="eng", manager_id="00uboss")
        cy = org.user("cy@example.com", department="ops", manager_id="somebody-else")
        group = org.group("everyone")
        github = org.connector("github", owner="platform@example.com")
        slack = org.connector("slack")
        for connector in (github, slack):
            create_mapping(session, origin, group, connector, "read")
        for person in (ada, bob, cy):
            org.join(person, group)
    return {
        "boss": boss.id,
        "ada": ada.id,
        "bob": bob.id,
        "cy": cy.id,
        "group": group.id,
        "github": github.id,
        "slack": slack.id,
    }


def open_campaign(session, origin, no_response=NoResponse.KEEP, **fields) -> ReviewCampaign:
    fields.setdefault("name", "Q4 review")
    fields.setdefault("trigger", CampaignTrigger.MANUAL)
    fields.setdefault("deadline", later(14))
    return campaigns.create_campaign(session, origin, no_response=no_response, **fields)


def items(session, campaign_id) -> dict[tuple[uuid.UUID, int], ReviewItem]:
    rows = session.scalars(select(ReviewItem).where(ReviewItem.campaign_id == campaign_id))
    return {(i.user_id, i.connector_id): i for i in rows}


def live(session) -> set[tuple[uuid.UUID, int]]:
    return set(
        session.execute(
            select(Grant.user_id, Grant.connector_id).where(Grant.revoked_at.is_(None))
        ).all()
    )


def pass_deadline(database, campaign_id) -> None:
    """Time passes: the campaign's deadline is now behind us."""
    with database.transaction() as session:
        session.execute(
            update(ReviewCampaign)
            .where(ReviewCampaign.id == campaign_id)
            .values(deadline=utcnow() - dt.timedelta(minutes=1))
        )


def actions(session, action: str) -> list[AuditEvent]:
    return list(
        session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by("id"))
    )


@pytest.mark.parametrize("no_response", [NoResponse.KEEP, NoResponse.REVOKE])
def test_a_campaign_from_creation_to_closing_itself_on_its_deadline(
    database, origin, team, no_response
):
    with database.transaction() as session:
        campaign = open_campaign(session, origin, no_response)
        campaign_id = campaign.id
        assert campaign.counts == {"items": 6}
        by_pair = items(session, campaign_id)
        ada_github = by_pair[(team["ada"], team["github"])]
        snapshot = ada_github.snapshot
        assert snapshot["user_name"] == "ada@example.com"
        assert snapshot["connector"] == "github"
        assert snapshot["access_level"] == "read"
        assert snapshot["why"] == ["mapping:1"]
        assert snapshot["user_status"] == "active"
        assert snapshot["department"] == "eng"
        assert snapshot["last_used_at"] is None
        assert snapshot["granted_at"].endswith("Z")
        decide(session, REVIEWER, ada_github, ReviewDecision.APPROVE, "needs it")
        decide(
            session,
            REVIEWER,
            by_pair[(team["ada"], team["slack"])],
            ReviewDecision.REVOKE,
            "moved off the team channel",
        )
        decide(session, REVIEWER, by_pair[(team["bob"], team["github"])], ReviewDecision.APPROVE)
        # Bob's Slack, Cy's GitHub and Cy's Slack: nobody answers.

    pass_deadline(database, campaign_id)
    run = run_job(database, load(database_url=database.url), "reviews-close")
    assert run.outcome == "succeeded" and run.counts["closed"] == [campaign_id]

    unanswered = {
        (team["bob"], team["slack"]),
        (team["cy"], team["github"]),
        (team["cy"], team["slack"]),
    }
    revoked = {(team["ada"], team["slack"])}
    if no_response is NoResponse.REVOKE:
        revoked |= unanswered
    with database.reader() as session:
        campaign = session.get(ReviewCampaign, campaign_id)
        assert campaign.state == "closed" and campaign.closed_by == "job:reviews-close"
        assert campaign.counts["items"] == 6
        assert campaign.counts["approved"] == 2
        assert campaign.counts["revoke_decisions"] == 1
        assert campaign.counts["undecided"] == 3
        assert campaign.counts["outcome_revoked"] == len(revoked)
        assert campaign.counts.get("outcome_kept", 0) == 6 - len(revoked)
        assert campaign.counts["grants_revoked"] == len(revoked)
        outcomes = {pair: str(i.outcome) for pair, i in items(session, campaign_id).items()}
        assert {p for p, o in outcomes.items() if o == "revoked"} == revoked
        everyone = {(team[u], team[c]) for u in ("ada", "bob", "cy") for c in ("github", "slack")}
        assert live(session) == everyone - revoked
        reasons = set(
            session.scalars(select(Grant.revoke_reason).where(Grant.revoked_at.is_not(None)))
        )
        assert reasons == {"access withdrawn by a review or dormant-access remediation"}
        revoked_events = actions(session, "grant.revoked")
        assert len(revoked_events) == len(revoked)
        assert {e.actor for e in revoked_events} == {"job:reviews-close"}
        assert {e.source for e in revoked_events} == {"job"}
        assert [e.action for e in actions(session, "review.created")] == ["review.created"]
        assert len(actions(session, "review.decided")) == 3
        (closed,) = actions(session, "review.closed")
        assert closed.after["counts"]["grants_revoked"] == len(revoked)
        assert verify(session).broken_at is None

    # The engine, run again for everyone, gives nothing back and takes nothing more.
    with database.transaction() as session:
        assert not engine.apply(session, engine.Affected.everyone(), origin)
        assert live(session) == everyone - revoked


def test_a_revoked_grant_stays_revoked_until_a_new_source_grants_it(database, origin, team):
    with database.transaction() as session:
        campaign = open_campaign(session, origin, connector_ids=[team["slack"]])
        assert campaign.counts == {"items": 3}
        item = items(session, campaign.id)[(team["ada"], team["slack"])]
        decide(session, REVIEWER, item, ReviewDecision.REVOKE, "left the project")
        campaigns.close_campaign(session, REVIEWER, campaign.id)
        assert (team["ada"], team["slack"]) not in live(session)
    with database.transaction() as session:
        # The IdP takes Ada out of the group and puts her back; the engine runs for everyone.
        org = Org(session, origin)
        ada, group = session.get(User, team["ada"]), session.get(Group, team["group"])
        org.leave(ada, group)
        org.join(ada, group)
        engine.apply(session, engine.Affected.everyone(), origin)
        assert (team["ada"], team["slack"]) not in live(session)
        assert (team["ada"], team["github"]) in live(session)  # the review was of Slack only
        question = decisions.Question("ada@example.com", "slack", "post", Interface.WEB)
        assert decisions.decide(session, question).decision is Decision.DENY
    with database.transaction() as session:
        # An admin's manual exception, made after the review, is a new decision: it grants.
        ada, slack = session.get(User, team["ada"]), session.get(Connector, team["slack"])
        exception, _ = create_exception(
            session, origin, ada, slack, "read", justification="incident duty", expires_at=later(7)
        )
        assert (team["ada"], team["slack"]) in live(session)
        # ...and only the exception justifies it: the withdrawn mapping does not count.
        assert engine.explain(session, team["ada"], team["slack"]) == [f"exception:{exception.id}"]
    with database.transaction() as session:
        # When it expires, the mapping the review withdrew still justifies nothing.
        session.execute(
            update(ManualException).values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )
        expire(session, origin)
        assert (team["ada"], team["slack"]) not in live(session)
        latest = session.scalar(select(Grant).order_by(Grant.id.desc()).limit(1))
        assert latest.revoke_reason == "no mapping or exception justifies it"
    with database.transaction() as session:
        # A new mapping of the group is a new decision too.
        group, slack = session.get(Group, team["group"]), session.get(Connector, team["slack"])
        mapping = session.scalar(select(Mapping).where(Mapping.connector_id == team["slack"]))
        delete_mapping(session, origin, mapping)
        create_mapping(session, origin, group, slack, "read")
        assert (team["ada"], team["slack"]) in live(session)


def test_a_revoked_exception_only_grant_is_withdrawn_too(database, origin, team):
    with database.transaction() as session:
        org = Org(session, origin)
        dee = org.user("dee@example.com", manager_id=str(team["boss"]))
        wiki = org.connector("wiki", owner="docs@example.com")
        exception, _ = create_exception(
            session, origin, dee, wiki, "read", justification="x", expires_at=later()
        )
        campaign = open_campaign(session, origin, NoResponse.REVOKE, connector_ids=[wiki.id])
        (item,) = items(session, campaign.id).values()
        assert item.reviewer == "boss@example.com" and item.reviewer_role == "manager"
        assert item.snapshot["why"] == [f"exception:{exception.id}"]
        campaigns.close_campaign(session, origin, campaign.id)
        assert (dee.id, wiki.id) not in live(session)
        assert not engine.apply(session, engine.Affected.users(dee.id), origin)
        (revocation,) = session.scalars(select(ReviewRevocation))
        assert (revocation.user_id, revocation.item_id) == (dee.id, item.id)
        assert revocation.revoked_by == "test-admin"


def test_reviewers_are_managers_then_connector_owners(database, origin, team):
    with database.transaction() as session:
        org = Org(session, origin)
        group = session.get(Group, team["group"])
        # Eve's manager is named by userName, in another case; Fay manages herself; Gus's
        # manager has left.
        eve = org.user("eve@example.com", manager_id="BOSS@example.com")
        fay = org.user("fay@example.com", external_id="00ufay", manager_id="00ufay")
        gone = org.user("gone@example.com")
        gus = org.user("gus@example.com", manager_id=str(gone.id))
        set_active(session, origin, gone, False)
        for person in (eve, fay, gus):
            org.join(person, group)
        campaign = open_campaign(session, origin, connector_ids=[team["github"], team["slack"]])
        reviewers = {
            (i.snapshot["user_name"].split("@")[0], i.snapshot["connector"]): (
                i.reviewer,
                None if i.reviewer_role is None else str(i.reviewer_role),
            )
            for i in items(session, campaign.id).values()
        }
        ada_github = items(session, campaign.id)[(team["ada"], team["github"])]
        assert ada_github.reviewer_user_id == team["boss"]
    boss = ("boss@example.com", "manager")
    owner = ("platform@example.com", "owner")
    assert reviewers == {
        ("ada", "github"): boss,  # manager by our id (what SCIM sends)
        ("ada", "slack"): boss,
        ("bob", "github"): boss,  # manager by Okta id (externalId)
        ("bob", "slack"): boss,
        ("eve", "github"): boss,  # manager by userName
        ("eve", "slack"): boss,
        ("cy", "github"): owner,  # unknown manager: the connector's owner
        ("cy", "slack"): (None, None),  # ...and Slack has none: an admin decides
        ("fay", "github"): owner,  # nobody reviews their own access
        ("fay", "slack"): (None, None),
        ("gus", "github"): owner,  # a manager who left reviews nothing
        ("gus", "slack"): (None, None),
    }


def test_the_last_decision_wins_until_the_campaign_closes(database, origin, team):
    with database.transaction() as session:
        campaign = open_campaign(session, origin)
        item = items(session, campaign.id)[(team["ada"], team["github"])]
        decide(session, REVIEWER, item, ReviewDecision.REVOKE, "not ops work")
        decide(session, origin, item, ReviewDecision.APPROVE, "on call for it")
        campaigns.close_campaign(session, origin, campaign.id)
        assert (team["ada"], team["github"]) in live(session)
        assert (item.decision, item.decided_by, item.comment) == (
            "approve",
            "test-admin",
            "on call for it",
        )
        first, second = actions(session, "review.decided")
        assert first.before is None and first.after["decision"] == "revoke"
        assert first.actor == "boss@example.com" and first.reason == "not ops work"
        assert second.before == {
            "decision": "revoke",
            "comment": "not ops work",
            "decided_by": "boss@example.com",
        }
        assert second.after["decision"] == "approve"


def test_a_closed_or_overdue_campaign_takes_no_decision(database, origin, team):
    with database.transaction() as session:
        campaign = open_campaign(session, origin)
        campaign_id = campaign.id
        item_id = items(session, campaign.id)[(team["ada"], team["github"])].id
    pass_deadline(database, campaign_id)
    with database.transaction() as session:
        item = session.get(ReviewItem, item_id)
        with pytest.raises(campaigns.CampaignClosed, match="passed its deadline"):
            decide(session, REVIEWER, item, ReviewDecision.REVOKE, "late")
    with database.transaction() as session:
        campaigns.close_campaign(session, origin, campaign_id)
    with database.transaction() as session:
        item = session.get(ReviewItem, item_id)
        with pytest.raises(campaigns.CampaignClosed, match="is closed"):
            decide(session, REVIEWER, item, ReviewDecision.REVOKE, "too late")
        with pytest.raises(campaigns.CampaignClosed):
            campaigns.close_campaign(session, origin, campaign_id)
    with database.reader() as session:
        assert session.get(ReviewItem, item_id).decision is None
        assert actions(session, "review.decided") == []


def test_a_grant_revoked_meanwhile_is_gone_not_revoked_again(database, origin, team):
    with database.transaction() as session:
        campaign = open_campaign(session, origin, NoResponse.REVOKE)
        set_active(session, origin, session.get(User, team["cy"]), False)
        campaigns.close_campaign(session, origin, campaign.id)
        outcomes = {p: str(i.outcome) for p, i in items(session, campaign.id).items()}
        assert outcomes[(team["cy"], team["github"])] == "gone"
        assert outcomes[(team["ada"], team["github"])] == "revoked"
        assert campaign.counts["outcome_gone"] == 2
        assert campaign.counts["grants_revoked"] == 4
        # Nothing recorded against Cy: if reactivated, their groups' access comes back.
        withdrawn = select(func.count(ReviewRevocation.id)).where(
            ReviewRevocation.user_id == team["cy"]
        )
        assert session.scalar(withdrawn) == 0


def test_the_deadline_must_be_ahead(database, origin, team):
    with database.transaction() as session, pytest.raises(campaigns.ReviewError):
        open_campaign(session, origin, deadline=utcnow() - dt.timedelta(seconds=1))


def test_a_department_change_through_scim_opens_a_review_of_that_persons_grants(database, team):
    secret = make_token(database, "okta-provisioning", ["scim:provision"])
    client = make_app(database).test_client()

    def patch(user_id, operations):
        return client.patch(
            f"/scim/v2/Users/{user_id}",
            json={"schemas": [PATCH_OP], "Operations": operations},
            headers={"Authorization": f"Bearer {secret}"},
        )

    # A change of something else is no change of role.
    renamed = patch(team["ada"], [{"op": "replace", "path": "displayName", "value": "Ada L."}])
    assert renamed.status_code == 200, renamed.get_json()
    with database.reader() as session:
        assert session.scalar(select(func.count(ReviewCampaign.id))) == 0

    moved = patch(
        team["ada"], [{"op": "replace", "path": f"{ENTERPRISE}:department", "value": "sales"}]
    )
    assert moved.status_code == 200, moved.get_json()

    with database.reader() as session:
        (campaign,) = session.scalars(select(ReviewCampaign))
        assert campaign.trigger == "role_change"
        assert campaign.subject_user_id == team["ada"]
        assert campaign.context == {"department": ["eng", "sales"]}
        assert campaign.created_by == "okta-provisioning"
        assert campaign.no_response == "keep"
        assert campaign.deadline - campaign.created_at == dt.timedelta(days=14)
        assert campaign.name == "Role change: ada@example.com (department)"
        found = items(session, campaign.id)
        assert set(found) == {(team["ada"], team["github"]), (team["ada"], team["slack"])}
        assert {i.snapshot["department"] for i in found.values()} == {"sales"}
        (created,) = actions(session, "review.created")
        assert created.source == "scim" and created.user_id == team["ada"]


def test_a_manager_change_opens_a_review_unless_the_person_holds_nothing(database, origin, team):
    settings = load(review_no_response="revoke", review_deadline_days=3)
    okta = Origin(actor="okta", source=Source.OKTA_HOOK)
    with database.transaction() as session:
        bob = session.get(User, team["bob"])
        update_user(session, okta, bob, settings=settings, manager_id=str(team["ada"]))
        newbie = Org(session, origin).user("newbie@example.com", department="eng")
        update_user(session, okta, newbie, settings=settings, department="sales")
    with database.reader() as session:
        (campaign,) = session.scalars(select(ReviewCampaign))
        assert campaign.subject_user_id == team["bob"]
        assert campaign.context == {"manager_id": ["00uboss", str(team["ada"])]}
        assert campaign.no_response == "revoke"
        assert campaign.deadline - campaign.created_at == dt.timedelta(days=3)
        # The new manager reviews.
        assert {i.reviewer for i in items(session, campaign.id).values()} == {"ada@example.com"}


def test_the_reviews_job_opens_one_scheduled_campaign_per_period_and_closes_due_ones(
    database, origin, team
):
    settings = load(database_url=database.url, review_deadline_days=10)
    first = run_job(database, settings, "reviews")
    assert first.outcome == "succeeded", first.error
    assert first.counts["items"] == 6 and first.counts["closed"] == []
    again = run_job(database, settings, "reviews")
    assert again.counts["created"] is None  # not due again before the next quarter
    with database.reader() as session:
        (campaign,) = session.scalars(select(ReviewCampaign))
        assert campaign.trigger == "schedule" and campaign.created_by == "job:reviews"
        assert campaign.deadline - campaign.created_at == dt.timedelta(days=10)
    # A quarter later, the first one overdue:
    with database.transaction() as session:
        session.execute(update(ReviewCampaign).values(created_at=utcnow() - dt.timedelta(days=100)))
    pass_deadline(database, campaign.id)
    third = run_job(database, settings, "reviews")
    assert third.counts["created"] == campaign.id + 1
    assert third.counts["closed"] == [campaign.id]


def test_the_scan_finds_a_live_grant_whose_only_sources_a_review_withdrew(database, origin, team):
    with database.transaction() as session:
        campaign = open_campaign(session, origin, NoResponse.REVOKE, connector_ids=[team["slack"]])
        campaigns.close_campaign(session, origin, campaign.id)
        # Someone edits the database behind the service's back and brings one back.
        session.execute(
            update(Grant)
            .where(Grant.user_id == team["ada"], Grant.connector_id == team["slack"])
            .values(revoked_at=None, revoke_reason=None)
        )
    with database.transaction() as session:
        scan(session)
        (finding,) = session.scalars(select(Finding).where(Finding.kind == "unjustified_grant"))
        assert finding.evidence == {"user": "ada@example.com", "connector": "slack"}


def test_only_the_reviewer_decides_unless_an_admin_overrides_saying_why(database, origin, team):
    with database.transaction() as session:
        campaign = open_campaign(session, origin)
        by_pair = items(session, campaign.id)
        cy_github = by_pair[(team["cy"], team["github"])]  # the owner reviews it
        cy_slack = by_pair[(team["cy"], team["slack"])]  # nobody does: an admin decides
        ada_github = by_pair[(team["ada"], team["github"])]  # boss reviews it
        with pytest.raises(campaigns.NotReviewer, match="decided by its reviewer"):
            decide(session, REVIEWER, cy_github, ReviewDecision.APPROVE, "mine?")
        with pytest.raises(campaigns.NotReviewer, match="decided by its reviewer"):
            decide(session, origin, ada_github, ReviewDecision.APPROVE, "admin", override=False)
        with pytest.raises(campaigns.NotReviewer, match="says why"):
            decide(session, origin, ada_github, ReviewDecision.APPROVE, None)
        ada = directory.person(session, "ada@example.com")
        with pytest.raises(campaigns.NotReviewer, match="their own access"):
            decide(session, origin, ada_github, ReviewDecision.APPROVE, "me", decider=ada)
        assert actions(session, "review.decided") == []
        decide(session, REVIEWER, ada_github, ReviewDecision.APPROVE, "needs it")
        decide(session, origin, cy_github, ReviewDecision.REVOKE, "owner away", override=True)
        decide(session, origin, cy_slack, ReviewDecision.APPROVE, "fine", override=False)
        roles = [e.after["as"] for e in actions(session, "review.decided")]
        assert roles == ["reviewer", "override", "fallback"]


def test_a_named_fallback_reviewer_decides_items_without_a_reviewer(database, origin, team):
    """With PROVISIONING_REVIEW_FALLBACK naming a person, only they decide an item nobody
    reviews (audited as fallback); an admin still may, overriding and saying why."""
    with database.transaction() as session:
        campaign = open_campaign(session, origin)
        cy_slack = items(session, campaign.id)[(team["cy"], team["slack"])]  # nobody reviews
        boss = directory.person(session, "boss@example.com")
        ada = directory.person(session, "ada@example.com")
        with pytest.raises(campaigns.NotReviewer, match=r"fallback reviewer boss@example\.com"):
            campaigns.decide(
                session, origin, cy_slack, ReviewDecision.APPROVE, "fine", fallback=boss
            )
        with pytest.raises(campaigns.NotReviewer, match="fallback reviewer"):
            campaigns.decide(
                session, origin, cy_slack, ReviewDecision.APPROVE, "x", decider=ada, fallback=boss
            )
        assert actions(session, "review.decided") == []
        campaigns.decide(
            session, REVIEWER, cy_slack, ReviewDecision.REVOKE, "gone", decider=boss, fallback=boss
        )
        campaigns.decide(
            session,
            origin,
            cy_slack,
            ReviewDecision.APPROVE,
            "boss is away",
            override=True,
            fallback=boss,
        )
        events = actions(session, "review.decided")
        assert [(e.after["as"], e.after["decision"]) for e in events] == [
            ("fallback", "revoke"),
            ("override", "approve"),
        ]
        assert cy_slack.decided_by == "test-admin"
