"""The console through Flask's test client: sign-in, sessions, CSRF, roles, and each page's
effects on the database."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.connectors.models import Connector
from provisioning.entitlements.models import Grant, Mapping
from provisioning.identity.models import User
from provisioning.offboarding.models import Offboarding
from provisioning.reviews.models import ReviewItem


def _events(database, action: str) -> list[AuditEvent]:
    with database.reader() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _state(database, user_id: str) -> str:
    with database.reader() as session:
        return str(session.get(User, uuid.UUID(user_id)).state)


def _live(database, user_id: str) -> int:
    with database.reader() as session:
        return session.scalar(
            select(func.count()).where(
                Grant.user_id == uuid.UUID(user_id), Grant.revoked_at.is_(None)
            )
        )


def test_token_sign_in_starts_a_secure_session_and_is_audited(console, seeded, database):
    answer = console.sign_in(seeded.admin_token)
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith("/console/")
    cookie = next(c for c in answer.headers.getlist("Set-Cookie") if "console_session" in c)
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/console" in cookie
    (event,) = _events(database, "console.signed_in")
    assert event.actor == "admin"
    assert event.after == {"role": "admin", "via": "token"}
    page = console.get("/console/").get_data(as_text=True)
    assert 'id="live-grants">2<' in page
    assert "<svg" in page


def test_bad_tokens_are_refused(console, seeded, database):
    for token in ("prov_not-a-token", "", seeded.admin_token + "x"):
        answer = console.sign_in(token)
        assert answer.status_code == 401
        assert "unknown or revoked" in answer.get_data(as_text=True)
    assert console.get("/console/").status_code == 302
    assert _events(database, "console.signed_in") == []


def test_a_token_without_a_console_role_is_refused(console, database, seeded):
    from provisioning.audit.log import Origin, Source
    from provisioning.tokens import credentials

    with database.transaction() as session:
        token = credentials.create(session, "scim", ["scim:provision"], Origin("t", Source.CLI))
    answer = console.sign_in(token)
    assert answer.status_code == 401
    assert "no scope that gives a console role" in answer.get_data(as_text=True)


def test_pages_need_a_session(console, seeded):
    for path in ("/console/", "/console/people", "/console/connectors", "/console/audit"):
        answer = console.get(path)
        assert answer.status_code == 302
        assert "/console/sign-in?next=" in answer.headers["Location"]
    answer = console.post("/console/connectors/wiki/enabled", {"enabled": "false"})
    assert answer.status_code == 401


def test_an_expired_session_signs_out(console, seeded):
    console.sign_in(seeded.viewer_token)
    with console.client.session_transaction("/console/", base_url="https://localhost") as held:
        held["at"] -= 9 * 3600
    assert console.get("/console/people").status_code == 302


def test_other_paths_get_no_session_cookie(console, seeded):
    console.sign_in(seeded.admin_token)
    answer = console.client.get("/healthz")
    assert not [c for c in answer.headers.getlist("Set-Cookie") if "console_session" in c]


def test_a_form_without_the_csrf_token_changes_nothing(console, seeded, database):
    console.sign_in(seeded.admin_token)
    form = {"reason": "left", "confirm": "yes", "form_key": "k1"}
    for csrf in ({}, {"csrf_token": "forged"}):
        answer = console.post(
            f"/console/people/{seeded.ada}/offboard", {**form, **csrf}, csrf=False
        )
        assert answer.status_code == 400
        assert "did not come from this console" in answer.get_data(as_text=True)
    assert _state(database, seeded.ada) == "active"
    assert _live(database, seeded.ada) == 1


def test_a_viewer_cannot_reach_admin_actions(console, seeded, database):
    console.sign_in(seeded.viewer_token)
    page = console.get(f"/console/people/{seeded.ada}").get_data(as_text=True)
    assert "Offboard" not in page
    answer = console.post(
        f"/console/people/{seeded.ada}/offboard", {"reason": "x", "confirm": "yes"}
    )
    assert answer.status_code == 403
    assert console.post("/console/connectors/wiki/enabled", {"enabled": "false"}).status_code == 403
    assert console.post("/console/mappings", {}).status_code == 403
    assert console.get("/console/reviews").status_code == 403
    assert _state(database, seeded.ada) == "active"


def test_the_person_page_says_why(console, seeded):
    console.sign_in(seeded.viewer_token)
    page = console.get(f"/console/people/{seeded.ada}").get_data(as_text=True)
    assert "member of <strong>eng</strong>, mapped by mapping:1" in page
    assert "merge_pull_request" in page
    assert "needs approval" in page
    assert console.get("/console/people/not-an-id").status_code == 404
    found = console.get("/console/people?q=LOVELACE").get_data(as_text=True)
    assert "ada@example.com" in found
    assert "bob@example.com" not in found
    partial = console.get("/console/people?q=bob", headers={"HX-Request": "true"})
    assert "<html" not in partial.get_data(as_text=True)
    assert "bob@example.com" in partial.get_data(as_text=True)


def test_offboarding_needs_confirmation_and_happens_once(console, seeded, database):
    console.sign_in(seeded.admin_token)
    path = f"/console/people/{seeded.ada}/offboard"
    unconfirmed = console.post(path, {"reason": "left", "form_key": "k1"})
    assert unconfirmed.status_code == 422
    assert "Tick the confirmation box" in unconfirmed.get_data(as_text=True)
    assert _state(database, seeded.ada) == "active"
    for _ in range(2):  # the same form submitted twice
        answer = console.post(path, {"reason": "left", "confirm": "yes", "form_key": "k1"})
        assert answer.status_code == 303
    assert _state(database, seeded.ada) == "offboarded"
    assert _live(database, seeded.ada) == 0
    with database.reader() as session:
        (offboarding,) = session.scalars(select(Offboarding)).all()
        assert offboarding.requested_by == "admin"
    (revoked,) = _events(database, "grant.revoked")
    assert revoked.actor == "admin"
    page = console.get(f"/console/people/{seeded.ada}").get_data(as_text=True)
    assert "requested by admin" in page


def test_a_mapping_is_shown_as_a_dry_run_before_it_is_made(console, seeded, database):
    console.sign_in(seeded.admin_token)
    form = {"group_id": seeded.ops, "connector": "wiki", "access_level": "read"}
    preview = console.post("/console/mappings", form)
    assert preview.status_code == 200
    text = preview.get_data(as_text=True)
    assert "mgr@example.com gains wiki (read)" in text
    assert "nothing is written yet" in text
    with database.reader() as session:
        assert session.scalar(select(func.count()).select_from(Mapping)) == 1
    done = console.post("/console/mappings", {**form, "confirm": "yes"})
    assert "1 person(s) gained access" in done.get_data(as_text=True)
    with database.reader() as session:
        assert session.scalar(select(func.count()).select_from(Mapping)) == 2
    (created,) = [e for e in _events(database, "mapping.created") if e.actor == "admin"]
    assert created.after["access_level"] == "read"
    again = console.post("/console/mappings", {**form, "confirm": "yes"})
    assert again.status_code == 422
    bad = console.post("/console/mappings", {**form, "access_level": "root"})
    assert bad.status_code == 422
    assert "Choose an access level" in bad.get_data(as_text=True)
    bad = console.post("/console/mappings", {**form, "group_id": "nope", "expires_on": "x"})
    assert bad.status_code == 422


def test_a_connector_that_fails_governance_cannot_be_enabled(console, seeded, database):
    console.sign_in(seeded.admin_token)
    page = console.get("/console/connectors").get_data(as_text=True)
    assert "Cannot be enabled: third-party connector vendor-chat needs an approved" in page
    assert "merge_pull_request <small>write</small>" in page
    refused = console.post("/console/connectors/vendor-chat/enabled", {"enabled": "true"})
    assert refused.status_code == 409
    assert console.post("/console/connectors/wiki/enabled", {"enabled": "false"}).status_code == 303
    with database.reader() as session:
        enabled = dict(session.execute(select(Connector.slug, Connector.enabled)).all())
    assert enabled == {"github": True, "vendor-chat": False, "wiki": False}
    (event,) = [e for e in _events(database, "connector.updated") if e.subject_id == "wiki"]
    assert event.actor == "admin"


def test_a_reviewer_decides_their_own_items_only(console, idp, seeded, database):
    console.sign_in_oidc(idp, preferred_username="mgr@example.com", groups=["managers"])
    page = console.get("/console/reviews").get_data(as_text=True)
    assert "ada@example.com · github" in page
    assert "bob@example.com · github" in page
    with database.reader() as session:
        items = {i.snapshot["user_name"]: i.id for i in session.scalars(select(ReviewItem))}
    ada_item = items["ada@example.com"]
    no_comment = console.post(f"/console/reviews/{ada_item}", {"decision": "revoke"})
    assert no_comment.status_code == 422
    answer = console.post(
        f"/console/reviews/{ada_item}", {"decision": "revoke", "comment": "moved team"}
    )
    assert answer.status_code == 303
    with database.reader() as session:
        item = session.get(ReviewItem, ada_item)
        assert (item.decision, item.comment, item.decided_by) == (
            "revoke",
            "moved team",
            "mgr@example.com",
        )
    # The admin is not this item's reviewer.
    admin = type(console)(console.client.application)
    admin.sign_in(seeded.admin_token)
    answer = admin.post(f"/console/reviews/{ada_item}", {"decision": "approve"})
    assert answer.status_code == 404


def test_oidc_sign_in_with_pkce_resolves_the_person_and_role(console, idp, seeded, database):
    start = console.get("/console/sign-in/oidc")
    assert "code_challenge_method=S256" in start.headers["Location"]
    answer = console.sign_in_oidc(idp, preferred_username="mgr@example.com", groups=["managers"])
    assert answer.status_code == 302, answer.get_data(as_text=True)
    assert console.get("/console/reviews").status_code == 200
    assert console.post("/console/connectors/wiki/enabled", {"enabled": "false"}).status_code == 403
    (event,) = _events(database, "console.signed_in")
    assert (event.actor, event.after) == ("mgr@example.com", {"role": "reviewer", "via": "oidc"})
    assert idp.refusals == []


def test_oidc_refuses_strangers_and_people_without_a_role(console, idp, seeded):
    for person, why in (
        ({"preferred_username": "eve@example.com", "groups": ["console-admins"]}, "directory"),
        ({"preferred_username": "bob@example.com", "groups": ["nobody"]}, "no console role"),
    ):
        answer = console.sign_in_oidc(idp, **person)
        assert answer.status_code == 403
        assert why in answer.get_data(as_text=True)
    # A callback with a state this session never sent.
    assert console.get("/console/sign-in/callback?code=x&state=forged").status_code == 401


def test_bulk_review_decisions_need_a_comment_and_are_all_or_nothing(
    console, idp, seeded, database
):
    console.sign_in_oidc(idp, preferred_username="mgr@example.com", groups=["managers"])
    with database.reader() as session:
        ids = [i.id for i in session.scalars(select(ReviewItem).order_by(ReviewItem.id))]
    page = console.get("/console/reviews").get_data(as_text=True)
    assert "0 of 2 decided" in page
    no_comment = console.post("/console/reviews", {"items": ids, "decision": "approve"})
    assert no_comment.status_code == 422
    foreign = console.post(
        "/console/reviews", {"items": [*ids, 999], "decision": "approve", "comment": "ok"}
    )
    assert foreign.status_code == 404
    with database.reader() as session:
        assert {i.decision for i in session.scalars(select(ReviewItem))} == {None}
    done = console.post("/console/reviews", {"items": ids, "decision": "approve", "comment": "ok"})
    assert done.status_code == 303
    with database.reader() as session:
        decided = {(i.decision, i.comment) for i in session.scalars(select(ReviewItem))}
    assert decided == {("approve", "ok")}
    assert "2 of 2 decided" in console.get("/console/reviews").get_data(as_text=True)


def test_findings_are_resolved_with_a_reason(console, seeded, database):
    from provisioning.oversight.findings import observe
    from provisioning.oversight.models import Finding, FindingKind, Severity

    with database.transaction() as session:
        observe(session, FindingKind.DORMANT_GRANT, Severity.LOW, "grant", [("1", {"days": 99})])
        finding_id = session.scalar(select(Finding.id))
    console.sign_in(seeded.admin_token)
    assert "dormant grant" in console.get("/console/findings").get_data(as_text=True)
    path = f"/console/findings/{finding_id}"
    assert console.post(path, {"state": "resolved"}).status_code == 422
    assert console.post(path, {"state": "open", "reason": "x"}).status_code == 422
    assert console.post(path, {"state": "resolved", "reason": "used daily"}).status_code == 303
    assert console.post(path, {"state": "suppressed", "reason": "again"}).status_code == 409
    with database.reader() as session:
        finding = session.get(Finding, finding_id)
        assert (str(finding.state), finding.decided_by) == ("resolved", "admin")


def test_dead_letters_are_retried_from_the_delivery_page(console, seeded, database, receiver):
    from sqlalchemy import update

    from provisioning.delivery.models import MessageState, OutboxMessage
    from tests.delivery.conftest import add_target

    target = add_target(database, "webhook", receiver.url, receiver.secret, name="gateway")
    console.sign_in(seeded.admin_token)
    console.post(f"/console/people/{seeded.ada}/offboard", {"reason": "left", "confirm": "yes"})
    with database.transaction() as session:
        session.execute(update(OutboxMessage).values(state=MessageState.DEAD, attempts=15))
    page = console.get("/console/delivery").get_data(as_text=True)
    assert "Retry 2 dead letter(s) to gateway" in page
    viewer = type(console)(console.client.application)
    viewer.sign_in(seeded.viewer_token)
    assert viewer.post(f"/console/delivery/{target.id}/retry").status_code == 403
    assert console.post(f"/console/delivery/{target.id}/retry").status_code == 303
    with database.reader() as session:
        states = set(session.scalars(select(OutboxMessage.state)))
    assert states == {MessageState.PENDING}
    (retried,) = _events(database, "target.retried")
    assert retried.actor == "admin"


def test_the_audit_page_verifies_and_exports_the_chain(console, seeded, database):
    import json

    console.sign_in(seeded.viewer_token)
    page = console.get("/console/audit?actor=viewer").get_data(as_text=True)
    assert "console.signed_in" in page
    verified = console.get("/console/audit/verify").get_data(as_text=True)
    assert "The chain is intact" in verified
    export = console.get("/console/audit/export")
    lines = [json.loads(line) for line in export.get_data(as_text=True).splitlines()]
    with database.reader() as session:
        assert len(lines) == session.scalar(select(func.count()).select_from(AuditEvent))
    assert lines[-1]["action"] == "console.signed_in"


def _version(page: str) -> str:
    import re

    return re.search(r'name="version" value="([^"]+)"', page).group(1)


def test_a_mapping_is_changed_and_removed_through_dry_runs(console, seeded, database):
    console.sign_in(seeded.admin_token)
    page = console.get("/console/mappings/1").get_data(as_text=True)
    version = _version(page)
    change = {"version": version, "action": "update", "access_level": "read"}
    preview = console.post("/console/mappings/1", change).get_data(as_text=True)
    assert "ada@example.com: github read_write → read" in preview
    with database.reader() as session:
        assert session.get(Mapping, 1).access_level == "read_write"
    done = console.post("/console/mappings/1", {**change, "confirm": "yes"})
    assert "2 changed level" in done.get_data(as_text=True)
    # The form opened before that change is now stale.
    stale = console.post("/console/mappings/1", {**change, "access_level": "read_write"})
    assert stale.status_code == 409
    assert "changed since you opened it" in stale.get_data(as_text=True)
    version = _version(console.get("/console/mappings/1").get_data(as_text=True))
    removal = {"version": version, "action": "delete"}
    preview = console.post("/console/mappings/1", removal).get_data(as_text=True)
    assert "bob@example.com loses github" in preview
    assert console.post("/console/mappings/1", {**removal, "confirm": "yes"}).status_code == 303
    with database.reader() as session:
        assert session.get(Mapping, 1) is None
    assert _live(database, seeded.ada) == 0
    (removed,) = _events(database, "mapping.deleted")
    assert removed.actor == "admin"
    assert console.get("/console/mappings/1").status_code == 404


def test_an_id_token_the_idp_keys_cannot_verify_is_refused(console, idp, seeded, database):
    from joserfc.jwk import RSAKey

    idp.signing_key = RSAKey.generate_key(2048, private=True)
    try:
        answer = console.sign_in_oidc(
            idp, preferred_username="mgr@example.com", groups=["managers"]
        )
    finally:
        idp.signing_key = idp.key
    assert answer.status_code == 401
    assert "refused" in answer.get_data(as_text=True)
    assert console.get("/console/").status_code == 302
    assert _events(database, "console.signed_in") == []


def test_the_overview_shows_how_fast_the_service_acts(console, seeded):
    console.sign_in(seeded.viewer_token)
    page = console.get("/console/").get_data(as_text=True)
    assert "Okta event published → grant revoked" in page
    assert 'id="latency-delivery"' in page


def test_latencies_read_as_people_read_them():
    from provisioning.console.pages import duration

    assert [duration(s) for s in (None, 0.34, 4.2, 720, 12600)] == [
        "none",
        "340 ms",
        "4.2 s",
        "12 min",
        "3.5 h",
    ]


def test_the_configured_fallback_reviewer_decides_items_without_a_reviewer(idp, seeded, database):
    """The defect: the console let only a named reviewer decide, so with
    PROVISIONING_REVIEW_FALLBACK set, items without a reviewer reached nobody's inbox."""
    from sqlalchemy import update

    from provisioning.web.app import create_app
    from tests.console.conftest import Console, console_settings

    with database.transaction() as session:
        items = {i.snapshot["user_name"]: i.id for i in session.scalars(select(ReviewItem))}
        session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == items["ada@example.com"])
            .values(reviewer=None, reviewer_user_id=None)
        )
    unreviewed = items["ada@example.com"]
    for fallback, sees in ((None, False), ("bob@example.com", True)):
        settings = console_settings(database, idp, review_fallback=fallback)
        bob = Console(create_app(settings, database, background=False))
        bob.sign_in_oidc(idp, preferred_username="bob@example.com", groups=["managers"])
        page = bob.get("/console/reviews").get_data(as_text=True)
        assert ("ada@example.com · github" in page) is sees
        # Mona reviews Bob's item, not the unreviewed one, whoever the fallback is.
        mona = Console(create_app(settings, database, background=False))
        mona.sign_in_oidc(idp, preferred_username="mgr@example.com", groups=["managers"])
        refused = mona.post(f"/console/reviews/{unreviewed}", {"decision": "approve"})
        assert refused.status_code == 404
    answer = bob.post(f"/console/reviews/{unreviewed}", {"decision": "revoke", "comment": "left"})
    assert answer.status_code == 303
    with database.reader() as session:
        item = session.get(ReviewItem, unreviewed)
        assert (item.decision, item.decided_by) == ("revoke", "bob@example.com")
    (event,) = _events(database, "review.decided")
    assert event.after["as"] == "fallback"
