"""System Log catch-up: missed events applied once, the cursor kept, failures recoverable."""

from __future__ import annotations

from sqlalchemy import select

from provisioning.audit.log import Source
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity.directory import create_group
from provisioning.identity.models import User
from provisioning.okta import events
from provisioning.okta.catchup import CURSOR, catch_up
from provisioning.okta.models import SyncCursor
from tests.org import Org


def setup_org(database, origin, okta):
    eng = okta.state.add_group("eng")
    with database.transaction() as session:
        github = Org(session, origin).connector("github")
        group = create_group(session, origin, display_name="eng", external_id=eng["id"])
        create_mapping(session, origin, group, github, "read")
    return eng


def live(database) -> set[str]:
    with database.reader() as session:
        rows = session.execute(
            select(User.external_id)
            .join(Grant, Grant.user_id == User.id)
            .where(Grant.revoked_at.is_(None))
        )
        return {r for (r,) in rows}


def test_missed_events_are_applied_and_the_cursor_kept(database, origin, okta, client):
    eng = setup_org(database, origin, okta)
    ada, bob = okta.state.add_user("ada@example.com"), okta.state.add_user("bob@example.com")
    okta.state.add_member(eng["id"], ada["id"], log=True)
    okta.state.add_member(eng["id"], bob["id"], log=True)
    run = catch_up(database, client)
    assert run.status == "succeeded", run.error
    assert run.counts["applied"] == 2
    assert live(database) == {ada["id"], bob["id"]}
    with database.reader() as session:
        cursor = session.get(SyncCursor, CURSOR).next_url
    # Nothing new: nothing applied, the cursor stays where Okta said to poll next.
    again = catch_up(database, client)
    assert again.counts["events"] == 0
    okta.state.set_status(bob["id"], "SUSPENDED", log_type="user.lifecycle.suspend")
    later = catch_up(database, client)
    assert later.counts["applied"] == 1
    assert live(database) == {ada["id"]}
    with database.reader() as session:
        assert session.get(SyncCursor, CURSOR).next_url != cursor


def test_an_event_seen_by_the_hook_and_the_log_is_applied_once(database, origin, okta, client):
    eng = setup_org(database, origin, okta)
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"], log=True)
    hooked = okta.state.logs[-1]
    with database.transaction() as session:
        events.apply(session, events.OktaEvent.model_validate(hooked), Source.OKTA_HOOK)
    run = catch_up(database, client)
    assert run.counts == {"pages": 2, "events": 1, "invalid": 0, "duplicate": 1}
    with database.reader() as session:
        grants = session.scalars(select(Grant)).all()
    assert len(grants) == 1


def test_a_failure_keeps_the_cursor_and_the_next_run_completes(database, origin, okta, client):
    eng = setup_org(database, origin, okta)
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"], log=True)
    okta.state.fail("/api/v1/logs", 500)
    run = catch_up(database, client)
    assert run.status == "failed" and "HTTP 500" in run.error
    with database.reader() as session:
        assert session.get(SyncCursor, CURSOR) is None
    assert catch_up(database, client).status == "succeeded"
    assert live(database) == {ada["id"]}


def test_invalid_log_records_are_counted_and_skipped(database, origin, okta, client):
    eng = setup_org(database, origin, okta)
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"], log=True)
    # A record without a uuid: it cannot be deduplicated, so it is never applied.
    broken = {
        "eventType": "group.user_membership.add",
        "published": okta.state.logs[0]["published"],
    }
    okta.state.logs.insert(0, broken)
    run = catch_up(database, client)
    assert run.counts["invalid"] == 1 and run.counts["applied"] == 1
