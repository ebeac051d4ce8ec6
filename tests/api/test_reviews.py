"""Access review campaigns over the admin API: open, list, decide, close; 409 once closed."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from provisioning.audit.models import AuditEvent
from provisioning.database import utcnow
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant, ReviewRevocation
from tests.org import Org
from tests.rows import rows

READ, WRITE = ["admin:read"], ["admin:write"]


def organisation(database, origin) -> None:
    """Boss manages Ada and Bob; one group gives them GitHub (owned) and Slack."""
    with database.transaction() as session:
        org = Org(session, origin)
        boss = org.user("boss@example.com")
        group = org.group("eng")
        for slug, owner in (("github", "platform@example.com"), ("slack", None)):
            create_mapping(session, origin, group, org.connector(slug, owner=owner), "read")
        for name in ("ada", "bob"):
            org.join(org.user(f"{name}@example.com", manager_id=str(boss.id)), group)
        org.join(org.user("cy@example.com"), group)


def live(database) -> set[tuple[str, str]]:
    from provisioning.connectors.models import Connector
    from provisioning.identity.models import User

    with database.reader() as session:
        rows = session.execute(
            select(User.user_name, Connector.slug)
            .join(Grant, Grant.user_id == User.id)
            .join(Connector, Connector.id == Grant.connector_id)
            .where(Grant.revoked_at.is_(None))
        )
        return {(user.split("@")[0], slug) for user, slug in rows}


def assert_problem(response, status: int, kind: str) -> None:
    assert response.status_code == status, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == status
    assert response.json["type"] == f"urn:provisioning:problem:{kind}"


def test_a_campaign_is_opened_decided_and_closed_over_the_api(api, database, origin):
    organisation(database, origin)
    opened = api.post(
        "/api/v1/reviews",
        json={"name": "GitHub Q4", "connectors": ["github"], "no_response": "revoke"},
        scopes=WRITE,
    )
    assert opened.status_code == 201, opened.json
    review = opened.json
    assert opened.headers["Location"] == review["url"] == f"/api/v1/reviews/{review['id']}"
    assert review["connectors"] == ["github"]
    assert review["trigger"] == "manual" and review["state"] == "open"
    assert review["created_by"] == "ada@example.com"
    assert review["counts"] == {"items": 3, "approved": 0, "revoke_decisions": 0, "undecided": 3}
    deadline = dt.datetime.fromisoformat(review["deadline"])
    assert dt.timedelta(days=13, hours=23) < deadline - utcnow() <= dt.timedelta(days=14)

    base = review["url"]
    assert api.get(f"{base}", scopes=READ).json == review
    listed = api.get("/api/v1/reviews?state=open", scopes=READ).json
    assert [r["id"] for r in listed["items"]] == [review["id"]]
    assert api.get("/api/v1/reviews?state=closed", scopes=READ).json["items"] == []

    boss_items = api.get(f"{base}/items?reviewer=boss@example.com", scopes=READ).json["items"]
    assert sorted(i["snapshot"]["user_name"] for i in boss_items) == [
        "ada@example.com",
        "bob@example.com",
    ]
    assert {i["reviewer_role"] for i in boss_items} == {"manager"}
    (cy,) = api.get(f"{base}/items?reviewer=platform@example.com", scopes=READ).json["items"]
    assert cy["snapshot"]["user_name"] == "cy@example.com" and cy["reviewer_role"] == "owner"
    ada, bob = sorted(boss_items, key=lambda i: i["snapshot"]["user_name"])

    def decide(item, body, scopes=WRITE, sub="boss@example.com"):
        return api.post(f"{base}/items/{item['id']}/decision", json=body, scopes=scopes, sub=sub)

    assert decide(ada, {"decision": "approve"}, scopes=READ).status_code == 403
    assert_problem(decide(bob, {"decision": "revoke"}), 422, "invalid-request")
    assert_problem(decide(bob, {"decision": "maybe", "comment": "x"}), 422, "invalid-request")
    approved = decide(ada, {"decision": "approve", "comment": "still on the platform team"})
    assert approved.status_code == 200, approved.json
    assert approved.json["decision"] == "approve"
    assert approved.json["decided_by"] == "boss@example.com"
    revoked = decide(bob, {"decision": "revoke", "comment": "moved to sales"})
    assert revoked.json["decision"] == "revoke"
    # Cy: nobody answers, and the campaign says revoke.

    undecided = api.get(f"{base}/items?decision=none", scopes=READ).json["items"]
    assert [i["id"] for i in undecided] == [cy["id"]]
    assert [
        i["id"] for i in api.get(f"{base}/items?decision=revoke", scopes=READ).json["items"]
    ] == [bob["id"]]
    counts = api.get(base, scopes=READ).json["counts"]
    assert counts == {"items": 3, "approved": 1, "revoke_decisions": 1, "undecided": 1}

    closed = api.post(f"{base}/close", scopes=WRITE)
    assert closed.status_code == 200, closed.json
    assert closed.json["state"] == "closed" and closed.json["closed_by"] == "ada@example.com"
    assert closed.json["counts"]["grants_revoked"] == 2
    assert live(database) == {
        ("ada", "github"),
        ("ada", "slack"),
        ("bob", "slack"),
        ("cy", "slack"),
    }
    outcomes = {
        i["snapshot"]["user_name"]: i["outcome"]
        for i in api.get(f"{base}/items", scopes=READ).json["items"]
    }
    assert outcomes == {
        "ada@example.com": "kept",
        "bob@example.com": "revoked",
        "cy@example.com": "revoked",
    }

    late = decide(ada, {"decision": "revoke", "comment": "changed my mind"})
    assert_problem(late, 409, "review-closed")
    assert "closed" in late.json["detail"]
    assert_problem(api.post(f"{base}/close", scopes=WRITE), 409, "review-closed")
    assert live(database) == {
        ("ada", "github"),
        ("ada", "slack"),
        ("bob", "slack"),
        ("cy", "slack"),
    }
    with database.reader() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("review.%")).order_by(AuditEvent.id)
        ).all()
        assert [e.action for e in events] == [
            "review.created",
            "review.decided",
            "review.decided",
            "review.closed",
        ]
        assert [e.actor for e in events] == [
            "ada@example.com",
            "boss@example.com",
            "boss@example.com",
            "ada@example.com",
        ]
        assert {e.source for e in events} == {"admin"}
        assert [e.after["as"] for e in events if e.action == "review.decided"] == ["reviewer"] * 2


def test_items_are_paged_and_unknown_things_are_refused(api, database, origin):
    organisation(database, origin)
    review = api.post("/api/v1/reviews", json={}, scopes=WRITE).json
    assert review["connectors"] is None and review["no_response"] == "keep"
    first = api.get(f"{review['url']}/items?limit=4", scopes=READ).json
    rest = api.get(f"{review['url']}/items?limit=4&cursor={first['next_cursor']}", scopes=READ).json
    assert len(first["items"]) == 4 and len(rest["items"]) == 2 and rest["next_cursor"] is None
    ids = [i["id"] for i in first["items"] + rest["items"]]
    assert ids == sorted(set(ids))
    slack = api.get(f"{review['url']}/items?connector=slack", scopes=READ).json["items"]
    assert {i["snapshot"]["connector"] for i in slack} == {"slack"} and len(slack) == 3

    unknown = api.post("/api/v1/reviews", json={"connectors": ["nope"]}, scopes=WRITE)
    assert_problem(unknown, 422, "invalid-request")
    assert unknown.json["errors"] == [{"field": "connectors", "message": "no connector(s) nope"}]
    past = (utcnow() - dt.timedelta(hours=1)).isoformat()
    assert_problem(
        api.post("/api/v1/reviews", json={"deadline": past}, scopes=WRITE), 422, "invalid-request"
    )
    assert_problem(api.get("/api/v1/reviews/999", scopes=READ), 404, "not-found")
    assert_problem(api.get("/api/v1/reviews/999/items", scopes=READ), 404, "not-found")
    other = api.post("/api/v1/reviews", json={}, scopes=WRITE).json
    item = first["items"][0]["id"]
    assert_problem(
        api.post(
            f"{other['url']}/items/{item}/decision", json={"decision": "approve"}, scopes=WRITE
        ),
        404,
        "not-found",
    )
    listed = api.get("/api/v1/reviews?limit=1", scopes=READ).json
    assert [r["id"] for r in listed["items"]] == [review["id"]] and listed["next_cursor"]


def test_review_items_are_decided_by_their_reviewer_or_an_audited_override(api, database, origin):
    organisation(database, origin)
    review = api.post("/api/v1/reviews", json={"connectors": ["github"]}, scopes=WRITE).json
    base = review["url"]
    items = api.get(f"{base}/items", scopes=READ).json["items"]
    by_user = {i["snapshot"]["user_name"].split("@")[0]: i for i in items}

    def decide(who, sub, body):
        url = f"{base}/items/{by_user[who]['id']}/decision"
        return api.post(url, json=body, scopes=WRITE, sub=sub)

    approve = {"decision": "approve", "comment": "ok"}
    # Bob is not Ada's reviewer; Ada may not review herself; an admin without a person
    # may not decide a named reviewer's item without overriding.
    assert_problem(decide("ada", "bob@example.com", approve), 403, "not-reviewer")
    assert_problem(decide("ada", "ada@example.com", approve), 403, "not-reviewer")
    assert_problem(decide("ada", "admin-robot", approve), 403, "not-reviewer")
    assert_problem(
        decide("ada", "admin-robot", {"decision": "approve", "override": True}),
        403,
        "not-reviewer",
    )
    with database.reader() as session:
        decided = select(AuditEvent).where(AuditEvent.action == "review.decided")
        assert session.scalars(decided).all() == []
    overridden = decide("ada", "admin-robot", {**approve, "override": True})
    assert overridden.status_code == 200, overridden.json
    assert overridden.json["decided_by"] == "admin-robot"
    assert decide("bob", "boss@example.com", approve).status_code == 200
    with database.reader() as session:
        events = session.scalars(decided.order_by(AuditEvent.id)).all()
        assert [(e.actor, e.after["as"]) for e in events] == [
            ("admin-robot", "override"),
            ("boss@example.com", "reviewer"),
        ]


def test_an_admin_lifts_a_review_revocation_with_a_reason_and_the_access_comes_back(
    api, database, origin
):
    from provisioning.audit.log import Origin, Source
    from provisioning.entitlements import engine

    organisation(database, origin)
    review = api.post(
        "/api/v1/reviews", json={"connectors": ["github"], "no_response": "revoke"}, scopes=WRITE
    ).json
    base = review["url"]
    items = api.get(f"{base}/items", scopes=READ).json["items"]
    by_user = {i["snapshot"]["user_name"].split("@")[0]: i for i in items}

    def lift(who, body, scopes=WRITE, sub="admin-robot", campaign=base):
        url = f"{campaign}/items/{by_user[who]['id']}/lift"
        return api.post(url, json=body, scopes=scopes, sub=sub)

    boss = "boss@example.com"
    for who, decision in (("ada", "approve"), ("bob", "revoke")):
        decided = api.post(
            f"{base}/items/{by_user[who]['id']}/decision",
            json={"decision": decision, "comment": "quarterly review"},
            scopes=WRITE,
            sub=boss,
        )
        assert decided.status_code == 200, decided.json
    reason = {"reason": "Bob is back on the platform on-call rota (INC-42)"}
    # Not yet applied: the campaign is open, the decision can still change.
    assert_problem(lift("bob", reason), 409, "not-liftable")
    assert api.post(f"{base}/close", scopes=WRITE).status_code == 200
    assert ("bob", "github") not in live(database) and ("cy", "github") not in live(database)

    other = api.post("/api/v1/reviews", json={"connectors": ["slack"]}, scopes=WRITE).json
    before = rows(database)
    assert_problem(lift("ada", reason), 409, "not-liftable")  # kept: nothing to lift
    assert_problem(lift("bob", {}), 422, "invalid-request")
    assert_problem(lift("bob", {"reason": "   "}), 422, "invalid-request")
    assert_problem(lift("bob", {"reason": ""}), 422, "invalid-request")
    assert lift("bob", reason, scopes=READ).status_code == 403
    assert_problem(lift("bob", reason, sub="bob@example.com"), 403, "not-reviewer")
    assert_problem(
        api.post(f"{base}/items/999999/lift", json=reason, scopes=WRITE), 404, "not-found"
    )
    assert_problem(lift("bob", reason, campaign=other["url"]), 404, "not-found")
    assert rows(database) == before
    with database.reader() as session:
        lifted_at = select(ReviewRevocation.lifted_at).where(
            ReviewRevocation.lifted_at.is_not(None)
        )
        assert session.scalars(lifted_at).all() == []
    assert ("bob", "github") not in live(database)

    lifted = lift("bob", reason, sub=boss)
    assert lifted.status_code == 200, lifted.json
    assert [(g["user_name"], g["connector"]) for g in lifted.json["gain"]] == [
        ("bob@example.com", "github")
    ]
    item = lifted.json["item"]
    assert item["outcome"] == "revoked" and item["lift_reason"] == reason["reason"]
    assert item["lifted_by"] == boss and item["lifted_at"]
    assert ("bob", "github") in live(database)
    assert ("cy", "github") not in live(database)  # only the lifted item's access
    listed = {i["id"]: i for i in api.get(f"{base}/items", scopes=READ).json["items"]}
    assert listed[item["id"]]["lifted_by"] == boss
    assert listed[by_user["cy"]["id"]]["lifted_at"] is None

    assert_problem(lift("bob", reason, sub=boss), 409, "not-liftable")  # twice
    # Every later run of the engine keeps it: the revocation withdraws nothing any more.
    with database.transaction() as session:
        diff = engine.apply(session, engine.Affected.everyone(), Origin("test", Source.JOB))
        assert not diff.revoked
    assert ("bob", "github") in live(database)

    with database.reader() as session:
        (event,) = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "review.revocation_lifted")
        ).all()
        assert event.actor == boss and event.reason == reason["reason"]
        assert event.subject_id == str(item["id"]) and event.after["lifted_by"] == boss
        granted = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "grant.created", AuditEvent.id > event.id)
        ).all()
        assert [g.reason for g in granted] == [f"review revocation lifted: {reason['reason']}"]
