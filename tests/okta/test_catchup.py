"""System Log catch-up: missed events applied once, the cursor kept, failures recoverable."""

from __future__ import annotations

from sqlalchemy import select

from provisioning.audit.log import Source
from provisioning.database import utcnow
from provisioning.entitlements.models import Grant
from provisioning.okta import events
from provisioning.okta.catchup import CURSOR, catch_up
from provisioning.okta.models import ParkedEvent, SeenEvent, SyncCursor
from tests.org import holders, mapped_okta_group


def test_missed_events_are_applied_and_the_cursor_kept(database, origin, okta, client):
    eng = okta.state.add_group("eng")
    mapped_okta_group(database, origin, eng["id"])
    ada, bob = okta.state.add_user("ada@example.com"), okta.state.add_user("bob@example.com")
    okta.state.add_member(eng["id"], ada["id"], log=True)
    okta.state.add_member(eng["id"], bob["id"], log=True)
    run = catch_up(database, client)
    assert run.status == "succeeded", run.error
    assert run.counts["applied"] == 2
    assert holders(database) == {ada["id"], bob["id"]}
    with database.reader() as session:
        cursor = session.get(SyncCursor, CURSOR).next_url
    # Nothing new: nothing applied, the cursor stays where Okta said to poll next.
    again = catch_up(database, client)
    assert again.counts["events"] == 0
    okta.state.set_status(bob["id"], "SUSPENDED", log_type="user.lifecycle.suspend")
    later = catch_up(database, client)
    assert later.counts["applied"] == 1
    assert holders(database) == {ada["id"]}
    with database.reader() as session:
        assert session.get(SyncCursor, CURSOR).next_url != cursor


def test_an_event_seen_by_the_hook_and_the_log_is_applied_once(database, origin, okta, client):
    eng = okta.state.add_group("eng")
    mapped_okta_group(database, origin, eng["id"])
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"], log=True)
    hooked = okta.state.logs[-1]
    with database.transaction() as session:
        events.apply(session, events.OktaEvent.model_validate(hooked), Source.OKTA_HOOK)
    run = catch_up(database, client)
    assert run.counts == {"pages": 2, "events": 1, "duplicate": 1}
    with database.reader() as session:
        grants = session.scalars(select(Grant)).all()
    assert len(grants) == 1


def test_a_failure_keeps_the_cursor_and_the_next_run_completes(database, origin, okta, client):
    eng = okta.state.add_group("eng")
    mapped_okta_group(database, origin, eng["id"])
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"], log=True)
    okta.state.fail("/api/v1/logs", 500)
    run = catch_up(database, client)
    assert run.status == "failed" and "HTTP 500" in run.error
    with database.reader() as session:
        assert session.get(SyncCursor, CURSOR) is None
    assert catch_up(database, client).status == "succeeded"
    assert holders(database) == {ada["id"]}


def test_invalid_log_records_are_parked_and_the_page_applied(database, origin, okta, client):
    eng = okta.state.add_group("eng")
    mapped_okta_group(database, origin, eng["id"])
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"], log=True)
    # A record without a uuid: it cannot be deduplicated, so it is never applied.
    broken = {
        "eventType": "group.user_membership.add",
        "published": okta.state.logs[0]["published"],
    }
    okta.state.logs.insert(0, broken)
    run = catch_up(database, client)
    assert run.counts["parked"] == 1 and run.counts["applied"] == 1
    assert holders(database) == {ada["id"]}
    with database.reader() as session:
        (parked,) = session.scalars(select(ParkedEvent))
        assert (parked.source, parked.delivery_id, parked.event) == ("okta-sync", None, broken)
        assert parked.reason.startswith("uuid:")


def test_a_log_event_dated_ahead_of_its_fetch_is_ordered_at_the_fetch(
    database, origin, okta, client
):
    eng = okta.state.add_group("eng")
    mapped_okta_group(database, origin, eng["id"])
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"], log=True)
    okta.state.logs[-1]["published"] = "2999-01-01T00:00:00.000Z"
    before = utcnow()
    run = catch_up(database, client)
    assert run.counts["applied"] == 1 and run.counts["clamped"] == 1
    with database.reader() as session:
        (seen,) = session.scalars(select(SeenEvent))
        assert seen.clamped and before <= seen.ordered_at <= utcnow()
    # A removal published now (after that fetch) still applies.
    okta.state.remove_member(eng["id"], ada["id"], log=True)
    assert catch_up(database, client).counts["applied"] == 1
    assert holders(database) == set()
