"""Decisions from committed facts, and last uses coalesced into batched writes."""

from __future__ import annotations

import datetime as dt
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from provisioning.connectors.catalogue import update_connector
from provisioning.connectors.models import Connector, Interface
from provisioning.database import utcnow
from provisioning.entitlements.decisions import LastUseRecorder, Question, decide
from provisioning.entitlements.mappings import create_exception, create_mapping
from provisioning.entitlements.models import Grant
from provisioning.entitlements.policy import Decision
from provisioning.identity.models import User
from provisioning.people.lifecycle import set_active
from tests.org import Org, later

ACTIONS = (
    ("search", "read", "always_allow"),
    ("merge", "write", "needs_approval"),
    ("delete_repo", "write", "blocked"),
)


def org_with_github(database, origin, **mapping):
    with database.transaction() as session:
        org = Org(session, origin)
        ada, eve = org.user("ada"), org.user("eve")
        group = org.group("eng")
        org.join(ada, group)
        github = org.connector("github", actions=ACTIONS, interfaces=["web", "desktop"])
        level = mapping.pop("level", "read_write")
        create_mapping(session, origin, group, github, level, **mapping)
    return ada, eve, github


def ask(database, user, action, interface="web", connector="github"):
    with database.reader() as session:
        return decide(session, Question(user, connector, action, Interface(interface)))


def test_org_policy_decides_for_a_granted_user(database, origin):
    ada, _, _ = org_with_github(database, origin)
    assert ask(database, "ada", "search").decision is Decision.ALLOW
    assert ask(database, str(ada.id), "merge").decision is Decision.NEEDS_APPROVAL
    assert ask(database, "ADA", "delete_repo").decision is Decision.BLOCKED
    answer = ask(database, "ada", "search")
    assert answer.grant_id is not None
    assert any("granted by mapping:" in r for r in answer.reasons)


def test_unknown_action_of_a_granted_connector_needs_approval(database, origin):
    org_with_github(database, origin)
    answer = ask(database, "ada", "brand_new_tool")
    assert answer.decision is Decision.NEEDS_APPROVAL
    assert "not catalogued" in answer.reasons[0]


def test_denials(database, origin):
    org_with_github(database, origin)
    assert ask(database, "eve", "search").decision is Decision.DENY
    assert ask(database, "nobody", "search").reasons == ("unknown user nobody",)
    assert ask(database, "ada", "search", connector="nope").decision is Decision.DENY
    assert ask(database, "ada", "search", interface="mobile").decision is Decision.DENY
    with database.transaction() as session:
        ada = session.scalar(select(User).where(User.user_name == "ada"))
        set_active(session, origin, ada, False)
    answer = ask(database, "ada", "search")
    assert answer.decision is Decision.DENY and answer.reasons == ("user is deactivated",)
    assert answer.grant_id is None


def test_a_mapping_only_tightens_and_a_subset_limits(database, origin):
    org_with_github(database, origin, actions=["search"], policies={"search": "needs_approval"})
    assert ask(database, "ada", "search").decision is Decision.NEEDS_APPROVAL
    assert ask(database, "ada", "merge").decision is Decision.DENY


def test_disabling_the_connector_denies_at_once(database, origin):
    _, _, github = org_with_github(database, origin)
    with database.transaction() as session:
        update_connector(session, origin, session.get(Connector, github.id), enabled=False)
    answer = ask(database, "ada", "search")
    assert answer.decision is Decision.DENY and "disabled" in answer.reasons[0]


def test_exceptions_count_as_sources(database, origin):
    _, eve, github = org_with_github(database, origin)
    with database.transaction() as session:
        create_exception(
            session, origin, eve, github, "read", justification="incident", expires_at=later()
        )
    assert ask(database, "eve", "search").decision is Decision.ALLOW
    assert ask(database, "eve", "merge").decision is Decision.DENY


def adas_grant(database, origin) -> int:
    """The id of Ada's grant to github, which her decisions use."""
    org_with_github(database, origin)
    return ask(database, "ada", "search").grant_id


def last_used(database) -> dt.datetime | None:
    with database.reader() as session:
        return session.scalar(select(Grant.last_used_at))


def test_last_use_is_coalesced_and_flushed_in_batches(database, origin):
    grant_id = adas_grant(database, origin)
    recorder = LastUseRecorder(database, max_pending=2, interval=3600)
    first = utcnow()
    recorder.used(grant_id, first)
    recorder.used(grant_id, first + dt.timedelta(seconds=1))
    assert recorder.pending() == 1  # the same grant twice is one pending write
    assert last_used(database) is None  # nothing written on the hot path yet
    assert recorder.flush() == 1
    assert last_used(database) == first + dt.timedelta(seconds=1)
    recorder.used(grant_id, first)  # an older use never moves it backwards
    recorder.flush()
    assert last_used(database) == first + dt.timedelta(seconds=1)


def test_a_use_close_to_the_recorded_one_is_not_written_again(database, origin):
    grant_id = adas_grant(database, origin)
    recorder = LastUseRecorder(database, max_pending=10, interval=3600)
    first = utcnow()
    recorder.used(grant_id, first)
    recorder.flush()
    answer = ask(database, "ada", "search")
    assert answer.last_used_at == first
    recorder.used(grant_id, first + dt.timedelta(minutes=59), recorded=answer.last_used_at)
    assert recorder.pending() == 0 and recorder.flush() == 0
    recorder.used(grant_id, first + dt.timedelta(minutes=61), recorded=answer.last_used_at)
    assert recorder.flush() == 1
    assert last_used(database) == first + dt.timedelta(minutes=61)


BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SECONDS = st.integers(min_value=0, max_value=10**6)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    recorded=st.lists(st.none() | SECONDS, min_size=6, max_size=6),
    uses=st.lists(st.tuples(st.integers(0, 5), SECONDS), max_size=30),
)
def test_a_flush_leaves_each_grant_at_its_latest_use(database, origin, recorded, uses):
    """Whatever was recorded before and whatever arrives in a batch: afterwards each grant's
    last use is the latest of the two, and grants the batch does not name are untouched."""
    with database.transaction() as session:
        org = Org(session, origin)
        if session.scalar(select(Grant.id).limit(1)) is None:
            group = org.group("all")
            for n in range(6):
                org.join(org.user(f"u{n}"), group)
            create_mapping(session, origin, group, org.connector("wiki"), "read")
        grant_ids = sorted(session.scalars(select(Grant.id)))
        for grant_id, seconds in zip(grant_ids, recorded, strict=True):
            at = None if seconds is None else BASE + dt.timedelta(seconds=seconds)
            session.execute(update(Grant).where(Grant.id == grant_id).values(last_used_at=at))
    recorder = LastUseRecorder(database, max_pending=10**6, interval=3600)
    expected = {
        g: None if s is None else BASE + dt.timedelta(seconds=s)
        for g, s in zip(grant_ids, recorded, strict=True)
    }
    for index, seconds in uses:
        at = BASE + dt.timedelta(seconds=seconds)
        recorder.used(grant_ids[index], at)
        before = expected[grant_ids[index]]
        expected[grant_ids[index]] = at if before is None else max(before, at)
    assert recorder.flush() == len({index for index, _ in uses})
    with database.reader() as session:
        assert {
            g: at for g, at in session.execute(select(Grant.id, Grant.last_used_at))
        } == expected


def test_last_use_flushes_by_itself_when_enough_are_waiting_or_time_passed(database, origin):
    grant_id = adas_grant(database, origin)
    by_count = LastUseRecorder(database, max_pending=1, interval=3600)
    by_count.used(grant_id)
    assert by_count.pending() == 0 and last_used(database) is not None
    by_time = LastUseRecorder(database, max_pending=1000, interval=0)
    later_use = utcnow() + dt.timedelta(minutes=1)
    by_time.used(grant_id, later_use)
    assert by_time.pending() == 0 and last_used(database) == later_use


def test_in_the_background_no_caller_waits_for_the_write(database, origin):
    grant_id = adas_grant(database, origin)
    recorder = LastUseRecorder(database, max_pending=1, interval=3600, background=True)
    used_at = utcnow()
    recorder.used(grant_id, used_at)
    deadline = time.monotonic() + 10
    while last_used(database) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert last_used(database) == used_at
    assert recorder.pending() == 0
