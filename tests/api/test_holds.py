"""Held mass revocations over HTTP: the mapping answer points at the hold; an admin confirms it."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, make_app
from tests.api.test_mappings import BASE, live, people


@pytest.fixture
def api(database, issuer) -> Api:
    """Every revocation counts: the app's settings say so, and it hands them to the domain."""
    return Api(make_app(database, issuer, mass_revocation_minimum=0), database, issuer)


def test_a_held_mapping_deletion_is_shown_and_confirmed(api, origin):
    groups = people(api, origin)
    one = {"group_id": groups["platform"], "connector": "github", "access_level": "read"}
    mapping = api.post(BASE, json=one).json["mapping"]
    assert live(api) == {("ada", "github", "read"), ("bob", "github", "read")}

    preview = api.delete(f"{BASE}/{mapping['id']}", query_string={"dry_run": "true"})
    # The dry run tells the truth: nothing would be lost at once, two would be held.
    assert preview.json["lose"] == [] and preview.json["held"] == 2
    deleted = api.delete(f"{BASE}/{mapping['id']}")
    assert deleted.status_code == 200, deleted.json
    assert deleted.json["lose"] == [] and deleted.json["held"] == 2
    hold_url = deleted.json["hold_url"]
    assert live(api) == {("ada", "github", "read"), ("bob", "github", "read")}

    waiting = api.get("/api/v1/revocation-holds", query_string={"state": "held"}).json["items"]
    assert [h["url"] for h in waiting] == [hold_url]
    assert (waiting[0]["revocations"], waiting[0]["users"], waiting[0]["active_grants"]) == (
        2,
        2,
        2,
    )
    assert api.post(f"{hold_url}/confirm", json={}).status_code == 422  # a reason is needed
    confirmed = api.post(f"{hold_url}/confirm", json={"reason": "platform moved off github"})
    assert confirmed.status_code == 200, confirmed.json
    assert confirmed.json["state"] == "confirmed" and confirmed.json["revoked"] == 2
    assert live(api) == set()
    again = api.post(f"{hold_url}/confirm", json={"reason": "twice"})
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    assert api.get("/api/v1/revocation-holds/999").status_code == 404
