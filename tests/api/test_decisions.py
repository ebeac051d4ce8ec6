"""The decision API: one call or a batch, from committed state, recording last use."""

from __future__ import annotations

from sqlalchemy import select

from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from tests.org import Org

URL = "/api/v1/decisions"
ACTIONS = (("search", "read", "always_allow"), ("merge", "write", "needs_approval"))


def seed(api, origin):
    with api.database.transaction() as session:
        org = Org(session, origin)
        ada = org.user("ada@example.com")
        group = org.group()
        org.join(ada, group)
        github = org.connector("github", actions=ACTIONS, interfaces=["web", "desktop"])
        create_mapping(session, origin, group, github, "read_write")
    return ada


def check(user="ada@example.com", action="search", interface="web", connector="github"):
    return {"user": user, "connector": connector, "action": action, "interface": interface}


def test_a_decision_with_reasons(api, origin):
    ada = seed(api, origin)
    response = api.post(URL, json=check(), scopes=["decisions:check"])
    assert response.status_code == 200, response.json
    assert response.json["decision"] == "allow"
    assert response.json["reasons"][0] == "org policy of search: always_allow"
    by_id = api.post(URL, json=check(user=str(ada.id), action="merge"))
    assert by_id.json["decision"] == "needs_approval"
    unknown = api.post(URL, json=check(action="new_tool"))
    assert unknown.json["decision"] == "needs_approval"
    assert api.post(URL, json=check(user="eve")).json["decision"] == "deny"


def test_batch_answers_in_order(api, origin):
    seed(api, origin)
    checks = [check(), check(action="merge"), check(interface="mobile"), check(user="eve")]
    response = api.post(f"{URL}/batch", json={"checks": checks})
    assert response.status_code == 200
    assert [r["decision"] for r in response.json["results"]] == [
        "allow",
        "needs_approval",
        "deny",
        "deny",
    ]
    too_many = api.post(f"{URL}/batch", json={"checks": [check()] * 101})
    assert too_many.status_code == 422 and too_many.json["errors"][0]["field"] == "checks"


def test_invalid_questions_are_422_naming_the_field(api, origin):
    for body, field in [
        ({**check(), "interface": "fax"}, "interface"),
        ({**check(), "extra": True}, "extra"),
        ({k: v for k, v in check().items() if k != "user"}, "user"),
        ({**check(), "user": ""}, "user"),
    ]:
        response = api.post(URL, json=body)
        assert response.status_code == 422
        assert [e["field"] for e in response.json["errors"]] == [field]


def test_decisions_record_last_use_in_batches(api, origin):
    seed(api, origin)
    recorder = api.app.extensions["provisioning.api.last_use"]
    recorder.interval = 3600
    for _ in range(3):
        assert api.post(URL, json=check()).json["decision"] == "allow"
    assert api.post(URL, json=check(user="eve")).json["decision"] == "deny"
    assert recorder.pending() == 1
    with api.database.reader() as session:
        assert session.scalar(select(Grant.last_used_at)) is None
    recorder.flush()
    with api.database.reader() as session:
        assert session.scalar(select(Grant.last_used_at)) is not None
