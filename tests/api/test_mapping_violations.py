"""Mapping changes that would make people break a separation-of-duties rule: a dry run lists
the violations, a commit is refused (409) unless confirmed with a reason, and a confirmed
violation is audited and stays an open finding until it goes."""

from __future__ import annotations

from sqlalchemy import select

from provisioning.audit.models import AuditEvent
from provisioning.oversight.models import Finding, FindingKind, FindingState
from tests.api.test_mappings import BASE, live, snapshot
from tests.org import Org, later

GITHUB = (
    ("list_pull_requests", "read", "always_allow"),
    ("open_pull_request", "write", "always_allow"),
    ("merge_pull_request", "write", "always_allow"),
)


def payments(api, origin) -> dict:
    """Ada holds payments-approve (an exception); a rule forbids it with payments-create;
    ``finance`` has Ada and Bob; ``devs`` (Ada, Bob) may open pull requests on github; a
    rule forbids opening and merging them to one person."""
    from provisioning.connectors.models import Action
    from provisioning.entitlements.mappings import create_exception, create_mapping

    with api.database.transaction() as session:
        org = Org(session, origin)
        ada, bob = org.user("ada"), org.user("bob")
        approve, create = org.connector("payments-approve"), org.connector("payments-create")
        github = org.connector("github", actions=GITHUB)
        create_exception(
            session, origin, ada, approve, "read", justification="cfo", expires_at=later(30)
        )
        rule = org.rule(
            "payments four eyes", [approve], [create], "who approves a payment never creates one"
        )

        def action(name):
            return session.scalar(
                select(Action).where(Action.connector_id == github.id, Action.name == name)
            )

        merge_rule = org.rule(
            "two-person merge",
            [action("open_pull_request")],
            [action("merge_pull_request")],
            "who writes a change never merges it",
        )
        finance, devs = org.group("finance"), org.group("devs")
        for person in (ada, bob):
            org.join(person, finance)
            org.join(person, devs)
        mapping, _ = create_mapping(
            session, origin, devs, github, "read_write", actions=["open_pull_request"]
        )
        return {
            "ada": str(ada.id),
            "bob": str(bob.id),
            "rule": rule.id,
            "merge_rule": merge_rule.id,
            "finance": str(finance.id),
            "devs_mapping": mapping.id,
        }


def _events(api, action: str) -> list[AuditEvent]:
    with api.database.reader() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def _open_findings(api) -> list[str]:
    with api.database.reader() as session:
        return sorted(
            session.scalars(
                select(Finding.subject_id).where(
                    Finding.kind == FindingKind.SEPARATION_VIOLATION,
                    Finding.state == FindingState.OPEN,
                )
            )
        )


def test_a_mapping_into_a_violation_is_shown_refused_then_confirmed(api, origin):
    org = payments(api, origin)
    body = {"group_id": org["finance"], "connector": "payments-create", "access_level": "read"}
    expected = [
        {
            "user_id": org["ada"],
            "user_name": "ada",
            "rule_id": org["rule"],
            "rule": "payments four eyes",
            "held": ["payments-approve"],
            "new": ["payments-create"],
        }
    ]
    before = snapshot(api)

    preview = api.post(BASE, json=body, query_string={"dry_run": "true"})
    assert preview.status_code == 200, preview.json
    assert preview.json["violations"] == expected
    assert preview.json["violations_total"] == 1
    assert preview.json["confirmation_needed"] is True
    assert [g["user_name"] for g in preview.json["gain"]] == ["ada", "bob"]
    assert snapshot(api) == before

    refused = api.post(BASE, json=body)
    assert refused.status_code == 409, refused.json
    assert refused.mimetype == "application/problem+json"
    assert refused.json["type"].endswith("separation-of-duties")
    assert refused.json["violations"] == expected
    assert refused.json["violations_total"] == 1
    assert "payments four eyes" in refused.json["detail"]
    assert snapshot(api) == before

    reason = "quarter close: Ada covers creation until the new hire starts"
    confirmed = api.post(BASE, json={**body, "confirm_violations": True, "reason": reason})
    assert confirmed.status_code == 201, confirmed.json
    assert confirmed.json["violations"] == expected
    assert confirmed.json["confirmation_needed"] is False
    assert ("ada", "payments-create", "read") in live(api)
    (accepted,) = _events(api, "separation.accepted")
    (violated,) = _events(api, "separation.violated")
    mapping_id = confirmed.json["mapping"]["id"]
    (created,) = [e for e in _events(api, "mapping.created") if e.subject_id == str(mapping_id)]
    for event in (accepted, violated):
        assert (event.subject_id, str(event.user_id)) == (str(org["rule"]), org["ada"])
        assert event.actor == created.actor
    assert accepted.reason == reason
    assert accepted.after["mapping"] == mapping_id
    assert accepted.after["held"] == ["payments-approve"]
    # Confirmation is not an exemption: the finding is open, and the scan keeps it so.
    subject = f"{org['rule']}:{org['ada']}"
    assert _open_findings(api) == [subject]
    from provisioning.oversight.scan import scan

    with api.database.transaction() as session:
        assert scan(session)["separation_violation"]["still_open"] == 1
    # A later change of the mapping that begins nothing new needs no confirmation.
    url = f"{BASE}/{mapping_id}"
    described = api.patch(url, json={"description": "payments creation"})
    assert described.status_code == 200, described.json
    assert described.json["violations"] == []
    # The violation goes (the mapping goes): the finding resolves.
    assert api.delete(url).status_code == 200
    assert _open_findings(api) == []


def test_widening_a_mapping_into_a_violation_needs_confirmation(api, origin):
    org = payments(api, origin)
    url = f"{BASE}/{org['devs_mapping']}"
    before = snapshot(api)
    widen = {"actions": None}
    preview = api.patch(url, json=widen, query_string={"dry_run": "true"})
    assert preview.status_code == 200, preview.json
    assert preview.json["gain"] == preview.json["change"] == []  # same grants, more actions
    assert [(v["user_name"], v["held"], v["new"]) for v in preview.json["violations"]] == [
        (name, ["github:open_pull_request"], ["github:merge_pull_request"])
        for name in ("ada", "bob")
    ]
    refused = api.patch(url, json=widen)
    assert refused.status_code == 409 and refused.json["violations_total"] == 2
    assert snapshot(api) == before
    confirmed = api.patch(url, json={**widen, "confirm_violations": True, "reason": "release"})
    assert confirmed.status_code == 200, confirmed.json
    assert len(_events(api, "separation.accepted")) == 2
    assert len(_events(api, "separation.violated")) == 2
    assert _open_findings(api) == sorted(
        f"{org['merge_rule']}:{org[name]}" for name in ("ada", "bob")
    )


def test_a_change_giving_both_sides_names_no_held_side(api, origin):
    payments(api, origin)
    with api.database.transaction() as session:
        org = Org(session, origin)
        carol, newcomers = org.user("carol"), org.group("newcomers")
        org.join(carol, newcomers)
        group_id = str(newcomers.id)
    body = {"group_id": group_id, "connector": "github", "access_level": "read_write"}
    preview = api.post(BASE, json=body, query_string={"dry_run": "true"})
    assert [(v["user_name"], v["held"], v["new"]) for v in preview.json["violations"]] == [
        ("carol", [], ["github:open_pull_request", "github:merge_pull_request"])
    ]


def test_bad_confirmations_are_refused_and_nothing_is_written(api, origin):
    org = payments(api, origin)
    body = {"group_id": org["finance"], "connector": "payments-create", "access_level": "read"}
    before = snapshot(api)
    for extra, field in [
        ({"confirm_violations": True}, "body"),
        ({"confirm_violations": True, "reason": ""}, "reason"),
        ({"confirm_violations": True, "reason": "   "}, "body"),
        ({"confirm_violations": True, "reason": "x" * 501}, "reason"),
        ({"reason": "because"}, "body"),
        ({"confirm_violations": "yes please", "reason": "x"}, "confirm_violations"),
    ]:
        for dry_run in ("false", "true"):
            response = api.post(BASE, json={**body, **extra}, query_string={"dry_run": dry_run})
            assert response.status_code == 422, (extra, response.json)
            assert response.mimetype == "application/problem+json"
            assert field in {e["field"] for e in response.json["errors"]}, response.json
        patched = api.patch(f"{BASE}/{org['devs_mapping']}", json={"actions": None, **extra})
        assert patched.status_code == 422, (extra, patched.json)
    assert snapshot(api) == before


def test_confirming_a_change_that_begins_no_violation_is_harmless(api, origin):
    org = payments(api, origin)
    body = {
        "group_id": org["finance"],
        "connector": "payments-approve",
        "access_level": "read",
        "confirm_violations": True,
        "reason": "belt and braces",
    }
    response = api.post(BASE, json=body)
    assert response.status_code == 201, response.json
    assert response.json["violations"] == [] and response.json["violations_total"] == 0
    assert _events(api, "separation.accepted") == []
    assert ("bob", "payments-approve", "read") in live(api)
