"""Manual exceptions listed over HTTP: filters a security team uses, paging, bad input; and
the filters against a brute-force reference over generated exceptions."""

from __future__ import annotations

import base64
import datetime as dt
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from provisioning.database import utcnow
from provisioning.entitlements.mappings import create_exception
from provisioning.entitlements.models import ManualException
from tests import hostile
from tests.api.conftest import Api, make_app
from tests.org import Org, closed_review
from tests.rows import rows

READ, WRITE = ["admin:read"], ["admin:write"]


def assert_problem(response, status: int, kind: str) -> None:
    assert response.status_code == status, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == status
    assert response.json["type"] == f"urn:provisioning:problem:{kind}"


def ids(response) -> list[int]:
    assert response.status_code == 200, response.json
    return [item["id"] for item in response.json["items"]]


def test_exceptions_are_listed_by_state_person_connector_expiry_and_author(api, database, origin):
    now = utcnow()
    with database.transaction() as session:
        org = Org(session, origin)
        ada = org.user("ada@example.com", external_id="00u-ada", email="ada.l@example.com")
        bob = org.user("bob@example.com")
        github, slack = org.connector("github"), org.connector("slack")

        def made(user, connector, days, *, by="sec-lead"):
            exception, _ = create_exception(
                session,
                origin.__class__(by, origin.source),
                user,
                connector,
                "read",
                justification=f"{user.user_name} on {connector.slug}",
                expires_at=now + dt.timedelta(days=days),
            )
            return exception

        ada_github = made(ada, github, 10)
        ada_slack = made(ada, slack, 2, by="ops")
        bob_github = made(bob, github, 30)
        revoked = made(bob, slack, 5)
        revoked.revoked_at = now
        expired = made(bob, github, 1)
        expired.expires_at = now - dt.timedelta(hours=1)
        ada_id = ada.id
    listed = api.get("/api/v1/exceptions", scopes=READ)
    assert ids(listed) == [ada_github.id, ada_slack.id, bob_github.id]
    first = listed.json["items"][0]
    assert first["user_name"] == "ada@example.com" and first["connector"] == "github"
    assert first["state"] == "active" and first["created_by"] == "sec-lead"

    def query(**params):
        return ids(api.get("/api/v1/exceptions", query_string=params, scopes=READ))

    assert query(state="revoked") == [revoked.id]
    assert query(state="expired") == [expired.id]
    assert query(state="all") == sorted(
        [ada_github.id, ada_slack.id, bob_github.id, revoked.id, expired.id]
    )
    # The person: by our id, Okta id, userName (any case) or email.
    for reference in (str(ada_id), "00u-ada", "ADA@example.com", "ada.l@example.com"):
        assert query(user=reference) == [ada_github.id, ada_slack.id], reference
    assert query(user_id=str(ada_id), connector="slack") == [ada_slack.id]
    assert query(user="nobody@example.com") == []
    assert query(connector="github", state="all") == [ada_github.id, bob_github.id, expired.id]
    assert query(created_by="ops") == [ada_slack.id]
    soon = (now + dt.timedelta(days=11)).isoformat()
    assert query(expires_before=soon) == [ada_github.id, ada_slack.id]
    assert query(expires_after=soon) == [bob_github.id]
    assert query(expires_after=(now + dt.timedelta(days=3)).isoformat(), expires_before=soon) == [
        ada_github.id
    ]

    page = api.get("/api/v1/exceptions?state=all&limit=2", scopes=READ).json
    seen = [i["id"] for i in page["items"]]
    while page["next_cursor"]:
        page = api.get(
            "/api/v1/exceptions",
            query_string={"state": "all", "limit": 2, "cursor": page["next_cursor"]},
            scopes=READ,
        ).json
        seen += [i["id"] for i in page["items"]]
    assert seen == query(state="all")

    one = api.get(f"/api/v1/exceptions/{revoked.id}", scopes=READ)
    assert one.status_code == 200 and one.json["state"] == "revoked"
    assert one.json == next(
        i
        for i in api.get("/api/v1/exceptions?state=all", scopes=READ).json["items"]
        if i["id"] == revoked.id
    )
    assert_problem(api.get("/api/v1/exceptions/999999", scopes=READ), 404, "not-found")
    assert api.get("/api/v1/exceptions", scopes=["decisions:check"]).status_code == 403


def forged(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def test_bad_queries_are_refused_and_change_nothing(api, database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        create_exception(
            session,
            origin,
            org.user("ada@example.com"),
            org.connector("github"),
            "read",
            justification="incident",
            expires_at=utcnow() + dt.timedelta(days=1),
        )
    before = rows(database)
    for cursor in (forged(["1"]), forged([2**31]), forged([1, 2]), "!!!!", forged([None])):
        response = api.get("/api/v1/exceptions", query_string={"cursor": cursor}, scopes=READ)
        assert_problem(response, 400, "invalid-cursor")
    bad = [
        {"state": "live"},
        {"state": ""},
        {"expires_before": "tomorrow"},
        {"expires_before": "2027-01-01T00:00:00"},  # no offset: whose time?
        {"expires_after": "2027-02-30T00:00:00Z"},
        {"user_id": "not-a-uuid"},
        {"user": ""},
        {"user": "x\x00y"},
        {"limit": 0},
        {"created_by": "x" * 256},
        {"expires_after": "2027-02-01T00:00:00Z", "expires_before": "2027-01-01T00:00:00Z"},
        {"colour": "red"},
    ]
    for params in bad:
        response = api.get("/api/v1/exceptions", query_string=params, scopes=READ)
        assert_problem(response, 422, "invalid-request")
        assert response.json["errors"], params
    for path in ("/api/v1/exceptions/0", "/api/v1/exceptions/2147483648"):
        assert api.get(path, scopes=READ).status_code in (404, 422)
    assert rows(database) == before


# -- the filters against a reference ----------------------------------------------------

USERS = ("ada", "bob", "cy")
CONNECTORS = ("github", "slack")
AUTHORS = ("sec-lead", "ops")

exception_specs = st.lists(
    st.tuples(
        st.sampled_from(USERS),
        st.sampled_from(CONNECTORS),
        st.integers(min_value=-5, max_value=5),  # expiry, days from now
        st.booleans(),  # revoked
        st.sampled_from(AUTHORS),
    ),
    max_size=12,
)
queries = st.fixed_dictionaries(
    {},
    optional={
        "user": st.sampled_from(USERS),
        "connector": st.sampled_from((*CONNECTORS, "jira")),
        "state": st.sampled_from(("active", "expired", "revoked", "all")),
        "expires_before": st.integers(min_value=-6, max_value=6),
        "expires_after": st.integers(min_value=-6, max_value=6),
        "created_by": st.sampled_from(AUTHORS),
        "limit": st.integers(min_value=1, max_value=5),
    },
)


def reference(made: list[dict], params: dict, now: dt.datetime) -> list[int]:
    """The exceptions ``params`` pick, by brute force in Python."""

    def state(e):
        if e["revoked"]:
            return "revoked"
        return "active" if e["expires_at"] > now else "expired"

    wanted = params.get("state", "active")
    return [
        e["id"]
        for e in made
        if (wanted == "all" or state(e) == wanted)
        and params.get("user") in (None, e["user"])
        and params.get("connector") in (None, e["connector"])
        and params.get("created_by") in (None, e["created_by"])
        and ("expires_before" not in params or e["expires_at"] < params["expires_before"])
        and ("expires_after" not in params or e["expires_at"] >= params["expires_after"])
    ]


@settings(
    max_examples=hostile.budget(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=exception_specs, params=queries)
def test_the_filters_pick_what_a_brute_force_reference_picks(
    fresh_database, issuer, origin, specs, params
):
    database = fresh_database()
    api = Api(make_app(database, issuer), database, issuer)
    now = utcnow().replace(microsecond=0)
    made = []
    with database.transaction() as session:
        org = Org(session, origin)
        users = {name: org.user(f"{name}@example.com") for name in USERS}
        connectors = {slug: org.connector(slug) for slug in CONNECTORS}
        for name, slug, days, revoked, author in specs:
            exception = ManualException(
                user_id=users[name].id,
                connector_id=connectors[slug].id,
                access_level="read",
                justification="generated",
                # Half a day off the query's whole days: no tie at a boundary.
                expires_at=now + dt.timedelta(days=days, hours=12),
                created_by=author,
                created_at=now - dt.timedelta(days=10),
                revoked_at=now if revoked else None,
            )
            session.add(exception)
            session.flush()
            made.append(
                {
                    "id": exception.id,
                    "user": name,
                    "connector": slug,
                    "expires_at": exception.expires_at,
                    "revoked": revoked,
                    "created_by": author,
                }
            )
    sent = dict(params)
    for bound in ("expires_before", "expires_after"):
        if bound in params:
            params[bound] = now + dt.timedelta(days=params[bound])
            sent[bound] = params[bound].replace(tzinfo=dt.UTC).isoformat()
    sent["user"] = f"{sent['user']}@example.com" if "user" in sent else None
    if sent["user"] is None:
        del sent["user"]
    inverted = (
        "expires_before" in params
        and "expires_after" in params
        and params["expires_after"] >= params["expires_before"]
    )
    found: list[int] = []
    cursor = None
    while True:
        query = {**sent, **({"cursor": cursor} if cursor else {})}
        response = api.get("/api/v1/exceptions", query_string=query, scopes=READ)
        if inverted:
            assert response.status_code == 422
            return
        assert response.status_code == 200, response.json
        assert len(response.json["items"]) <= params.get("limit", 100)
        found += [item["id"] for item in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert found == reference(made, params, now)


def test_an_exception_a_review_withdrew_says_so_until_the_revocation_is_lifted(
    api, database, origin
):
    from provisioning.reviews.models import ReviewItem

    with database.transaction() as session:
        org = Org(session, origin)
        ada, github = org.user("ada@example.com"), org.connector("github")
        exception, _ = create_exception(
            session,
            origin,
            ada,
            github,
            "read",
            justification="incident",
            expires_at=utcnow() + dt.timedelta(days=3),
        )
        campaign = closed_review(session, origin)
        item = session.scalar(select(ReviewItem))
    (listed,) = api.get("/api/v1/exceptions", scopes=READ).json["items"]
    assert listed["id"] == exception.id
    assert listed["state"] == "active" and listed["withdrawn"] is True
    lifted = api.post(
        f"/api/v1/reviews/{campaign.id}/items/{item.id}/lift",
        json={"reason": "the incident is still open"},
        scopes=WRITE,
        sub="admin-robot",
    )
    assert lifted.status_code == 200, lifted.json
    assert [g["connector"] for g in lifted.json["gain"]] == ["github"]
    assert api.get(f"/api/v1/exceptions/{exception.id}", scopes=READ).json["withdrawn"] is False
