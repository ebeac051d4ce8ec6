"""The console's mapping pages and separation of duties: the dry run lists the violations a
change would begin; making it needs the admin's tick and reason, else nothing is written."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.entitlements.mappings import create_exception
from provisioning.entitlements.models import Grant, Mapping
from provisioning.identity.models import Group, User
from provisioning.oversight.models import Finding, FindingKind, FindingState
from tests.console.test_console import _version
from tests.org import Org, later

REASON = "quarter close: Ada covers creation until the new hire starts"


@pytest.fixture
def four_eyes(database, origin, seeded) -> dict:
    """Ada holds payments-approve (an exception) and a rule forbids it with payments-create,
    so mapping eng (Ada, Bob) to payments-create would have Ada break the rule."""
    with database.transaction() as session:
        org = Org(session, origin)
        ada = session.get(User, uuid.UUID(seeded.ada))
        approve, create = org.connector("payments-approve"), org.connector("payments-create")
        create_exception(
            session, origin, ada, approve, "read", justification="cfo", expires_at=later(30)
        )
        rule = org.rule(
            "payments four eyes", [approve], [create], "who approves a payment never creates one"
        )
        return {"rule": rule.id}


def _count(database, model, *where) -> int:
    with database.reader() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def _events(database, action: str) -> list[AuditEvent]:
    with database.reader() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _open_findings(database) -> list[str]:
    with database.reader() as session:
        return sorted(
            session.scalars(
                select(Finding.subject_id).where(
                    Finding.kind == FindingKind.SEPARATION_VIOLATION,
                    Finding.state == FindingState.OPEN,
                )
            )
        )


FORM = {"connector": "payments-create", "access_level": "read"}


def test_the_dry_run_lists_the_violations_a_mapping_would_begin(console, seeded, four_eyes):
    console.sign_in(seeded.admin_token)
    preview = console.post("/console/mappings", {**FORM, "group_id": seeded.eng})
    assert preview.status_code == 200
    page = preview.get_data(as_text=True)
    assert "1 person(s) would break a separation-of-duties rule" in page
    assert 'id="violations"' in page
    assert "ada@example.com" in page
    assert "payments four eyes" in page
    assert "holds payments-approve" in page
    assert "would gain payments-create" in page
    assert 'name="accept_violations"' in page
    assert 'name="reason"' in page
    assert "ada@example.com gains payments-create (read)" in page


@pytest.mark.parametrize(
    ("confirm", "said"),
    [
        ({}, "I accept these violations"),
        ({"reason": REASON}, "payments four eyes"),
        ({"accept_violations": "yes"}, "needs a reason"),
        ({"accept_violations": "yes", "reason": "   "}, "needs a reason"),
        ({"accept_violations": "yes", "reason": "x" * 501}, "at most 500 characters"),
    ],
    ids=["neither", "reason-only", "tick-only", "blank-reason", "long-reason"],
)
def test_a_violating_mapping_is_refused_without_tick_and_reason(
    console, seeded, four_eyes, database, confirm, said
):
    console.sign_in(seeded.admin_token)
    mappings, audited = _count(database, Mapping), _count(database, AuditEvent)
    form = {**FORM, "group_id": seeded.eng, "confirm": "yes", **confirm}
    refused = console.post("/console/mappings", form)
    assert refused.status_code == 422
    page = refused.get_data(as_text=True)
    assert 'id="mapping-error"' in page
    error = page.index('id="mapping-error"')
    assert said in page[error : page.index("</p>", error)]
    assert 'name="accept_violations"' in page  # the dry run again, to be confirmed
    assert _count(database, Mapping) == mappings
    assert _count(database, AuditEvent) == audited
    assert _open_findings(database) == []


def test_a_confirmation_from_elsewhere_is_refused(console, seeded, four_eyes, database):
    console.sign_in(seeded.admin_token)
    mappings, audited = _count(database, Mapping), _count(database, AuditEvent)
    form = {**FORM, "group_id": seeded.eng, "confirm": "yes", "accept_violations": "yes"}
    forged = console.post("/console/mappings", {**form, "reason": REASON}, csrf=False)
    assert forged.status_code == 400
    assert (_count(database, Mapping), _count(database, AuditEvent)) == (mappings, audited)


def test_a_confirmed_violating_mapping_is_made_audited_and_found(
    console, seeded, four_eyes, database
):
    console.sign_in(seeded.admin_token)
    form = {**FORM, "group_id": seeded.eng, "confirm": "yes"}
    done = console.post("/console/mappings", {**form, "accept_violations": "yes", "reason": REASON})
    assert done.status_code == 200, done.get_data(as_text=True)
    assert "Mapping created: 2 person(s) gained access" in done.get_data(as_text=True)
    with database.reader() as session:
        (made,) = session.scalars(
            select(Mapping).where(
                Mapping.group_id == uuid.UUID(seeded.eng), Mapping.created_by == "admin"
            )
        ).all()
    assert _count(database, Grant, Grant.user_id == uuid.UUID(seeded.ada)) >= 2
    (accepted,) = _events(database, "separation.accepted")
    assert accepted.actor == "admin"
    assert accepted.reason == REASON
    assert accepted.subject_id == str(four_eyes["rule"])
    assert str(accepted.user_id) == seeded.ada
    assert accepted.after["mapping"] == made.id
    assert accepted.after["held"] == ["payments-approve"]
    assert accepted.after["new"] == ["payments-create"]
    assert _open_findings(database) == [f"{four_eyes['rule']}:{seeded.ada}"]


def test_a_mapping_change_into_a_violation_needs_the_same_confirmation(
    console, seeded, database, origin
):
    """ops (Mona) reads the ledger; a rule forbids viewing it and posting to it, so raising
    the mapping to read_write would have Mona break it."""
    from provisioning.connectors.models import Action
    from provisioning.entitlements.mappings import create_mapping

    with database.transaction() as session:
        org = Org(session, origin)
        ledger = org.connector(
            "ledger",
            actions=(("view", "read", "always_allow"), ("post", "write", "always_allow")),
        )
        ops = session.get(Group, uuid.UUID(seeded.ops))
        mapping, _ = create_mapping(session, origin, ops, ledger, "read")

        def action(name):
            return session.scalar(
                select(Action).where(Action.connector_id == ledger.id, Action.name == name)
            )

        rule = org.rule("ledger four eyes", [action("view")], [action("post")], "no self-review")
        mapping_id, rule_id = mapping.id, rule.id
    console.sign_in(seeded.admin_token)
    path = f"/console/mappings/{mapping_id}"
    version = _version(console.get(path).get_data(as_text=True))
    change = {"version": version, "action": "update", "access_level": "read_write"}
    page = console.post(path, change).get_data(as_text=True)
    assert "1 person(s) would break a separation-of-duties rule" in page
    assert "mgr@example.com" in page
    assert "holds ledger:view, would gain ledger:post" in page
    audited = _count(database, AuditEvent)
    refused = console.post(path, {**change, "confirm": "yes", "reason": REASON})
    assert refused.status_code == 422
    assert "ledger four eyes" in refused.get_data(as_text=True)
    assert _count(database, AuditEvent) == audited
    with database.reader() as session:
        assert session.get(Mapping, mapping_id).access_level == "read"
    confirmed = {**change, "confirm": "yes", "accept_violations": "yes", "reason": REASON}
    done = console.post(path, confirmed)
    assert done.status_code == 200, done.get_data(as_text=True)
    assert 'id="mapping-done"' in done.get_data(as_text=True)
    with database.reader() as session:
        assert session.get(Mapping, mapping_id).access_level == "read_write"
    (accepted,) = _events(database, "separation.accepted")
    assert (accepted.actor, accepted.reason, str(accepted.user_id)) == ("admin", REASON, seeded.mgr)
    assert _open_findings(database) == [f"{rule_id}:{seeded.mgr}"]


def test_the_dry_run_lists_a_bounded_number_and_counts_them_all(
    console, seeded, four_eyes, database, origin, monkeypatch
):
    from provisioning.connectors.models import Connector
    from provisioning.console import pages

    with database.transaction() as session:
        bob = session.get(User, uuid.UUID(seeded.bob))
        approve = session.scalar(select(Connector).where(Connector.slug == "payments-approve"))
        create_exception(
            session, origin, bob, approve, "read", justification="cfo", expires_at=later(30)
        )
    monkeypatch.setattr(pages, "SHOWN_VIOLATIONS", 1)
    console.sign_in(seeded.admin_token)
    page = console.post("/console/mappings", {**FORM, "group_id": seeded.eng}).get_data(
        as_text=True
    )
    assert "2 person(s) would break a separation-of-duties rule" in page
    assert "…and 1 more." in page
    listed = page[
        page.index('id="violations"') : page.index("</ul>", page.index('id="violations"'))
    ]
    assert listed.count("<li") == 1


def test_only_an_admin_confirms(app, seeded, four_eyes, database):
    from tests.console.conftest import Console

    viewer = Console(app)
    viewer.sign_in(seeded.viewer_token)
    mappings, audited = _count(database, Mapping), _count(database, AuditEvent)
    form = {**FORM, "group_id": seeded.eng, "confirm": "yes", "accept_violations": "yes"}
    assert viewer.post("/console/mappings", {**form, "reason": REASON}).status_code == 403
    assert _count(database, Mapping) == mappings
    assert _count(database, AuditEvent) == audited
