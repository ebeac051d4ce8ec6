"""The outbox and its delivery: real webhook and SCIM targets on 127.0.0.1, no fakes."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
from sqlalchemy import func, select

from provisioning.delivery import outbox
from provisioning.delivery.models import MessageState, OutboxMessage
from provisioning.delivery.targets import TargetError, check_url
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity.models import Group, User
from provisioning.offboarding import requests
from provisioning.oversight.models import Finding, FindingKind
from provisioning.people.lifecycle import set_active
from tests.delivery.conftest import ADMIN, LOCAL, add_target, keep_delivering, states
from tests.org import Org


@pytest.fixture
def org(database):
    """Lee in a group mapped to github and slack (not joined yet)."""
    with database.transaction() as session:
        org = Org(session, ADMIN)
        lee = org.user("lee@example.com", employee_number="E7", external_id="00ulee")
        group = org.group("engineering")
        connectors = {slug: org.connector(slug) for slug in ("github", "slack")}
        for connector in connectors.values():
            create_mapping(session, ADMIN, group, connector, "read")
    return lee, group, connectors


def join(database, user, group, present=True):
    with database.transaction() as session:
        org = Org(session, ADMIN)
        (org.join if present else org.leave)(user, group)


def test_grants_and_revocations_reach_a_webhook_signed_in_order(
    database, org, webhook_target, receiver, deliverer
):
    lee, group, _ = org
    join(database, lee, group)
    join(database, lee, group, present=False)

    deliverer.drain()

    assert receiver.rejected_signatures == 0
    events = receiver.received
    assert [e["type"] for e in events] == ["grant.created"] * 2 + ["grant.revoked"] * 2
    assert [e["sequence"] for e in events] == sorted(e["sequence"] for e in events)
    assert {e["data"]["grant"]["connector"] for e in events} == {"github", "slack"}
    assert all(e["data"]["user"]["userName"] == "lee@example.com" for e in events)
    revoked = events[2]["data"]["grant"]
    assert revoked["reason"] == "no mapping or exception justifies it"
    with database.reader() as session:
        ids = set(session.scalars(select(Grant.id).where(Grant.user_id == lee.id)))
    assert {e["data"]["grant"]["id"] for e in events} == ids
    assert states(database) == {"delivered": 4}


def test_messages_commit_with_the_change_or_not_at_all(database, org, webhook_target):
    lee, group, _ = org
    with pytest.raises(RuntimeError), database.transaction() as session:
        Org(session, ADMIN).join(lee, group)
        assert session.scalar(select(func.count(OutboxMessage.id))) == 2
        raise RuntimeError("the change fails after the engine ran")
    assert states(database) == {}
    with database.reader() as session:
        assert session.scalar(select(func.count(Grant.id))) == 0

    join(database, lee, group)
    assert states(database) == {"pending": 2}


def test_nothing_is_queued_without_targets(database, org):
    lee, group, _ = org
    join(database, lee, group)
    assert states(database) == {}


def test_a_scim_target_holds_one_group_per_connector(
    database, org, scim_target, downstream, deliverer
):
    lee, group, _ = org
    join(database, lee, group)
    deliverer.drain()
    assert downstream.groups() == ["github", "slack"]
    assert downstream.members("github") == downstream.members("slack") == {str(lee.id)}
    assert downstream.user(lee.id).active is True

    join(database, lee, group, present=False)
    deliverer.drain()
    assert downstream.members("github") == downstream.members("slack") == set()
    assert states(database) == {"delivered": 4}


def test_an_offboarding_reaches_both_targets_and_is_acknowledged(
    database, org, webhook_target, scim_target, receiver, downstream, deliverer
):
    lee, group, _ = org
    join(database, lee, group)
    deliverer.drain()
    with database.transaction() as session:
        offboarding = requests.request(
            session, ADMIN, identified_by="employeeNumber", identifier="E7", reason="left"
        ).offboarding
        # 2 revocations + user.offboarded, to each of the two targets
        assert len(offboarding.outbox_ids) == 6
        pending = outbox.acknowledgements(session, offboarding.outbox_ids)
    assert [t["acknowledged"] for t in pending] == [False, False]

    deliverer.drain()

    assert [e["type"] for e in receiver.received[-3:]] == [
        "grant.revoked",
        "grant.revoked",
        "user.offboarded",
    ]
    assert downstream.members("github") == set()
    assert downstream.user(lee.id).active is False
    with database.reader() as session:
        acks = outbox.acknowledgements(session, offboarding.outbox_ids)
    assert [(t["name"], t["acknowledged"], t["delivered"]) for t in acks] == [
        ("webhook", True, 3),
        ("scim", True, 3),
    ]


def test_an_idp_deactivation_tells_targets_too(database, org, webhook_target, receiver, deliverer):
    lee, group, _ = org
    join(database, lee, group)
    with database.transaction() as session:
        from provisioning.audit.log import Origin, Source

        set_active(session, Origin("scim-token", Source.SCIM), session.merge(lee), False)
    deliverer.drain()
    offboarded = receiver.of_type("user.offboarded")
    assert len(offboarded) == 1
    assert offboarded[0]["data"]["offboarding"]["source"] == "scim"
    assert len(receiver.of_type("grant.revoked")) == 2


def test_a_target_limited_to_some_connectors_hears_only_of_those(
    database, org, receiver, deliverer
):
    lee, group, _ = org
    add_target(database, "webhook", receiver.url, receiver.secret, connectors=["slack"])
    join(database, lee, group)
    with database.transaction() as session:
        requests.request(
            session, ADMIN, identified_by="employeeNumber", identifier="E7", reason="left"
        )
    deliverer.drain()
    assert [
        (e["type"], e["data"].get("grant", {}).get("connector")) for e in receiver.received
    ] == [
        ("grant.created", "slack"),
        ("grant.revoked", "slack"),
        ("user.offboarded", None),
    ]


def test_a_target_down_for_a_while_gets_everything_once_when_back(
    database, org, receiver, deliverer
):
    lee, group, _ = org
    add_target(database, "webhook", receiver.url, receiver.secret, max_attempts=1000)
    receiver.stop()  # connection refused
    for _ in range(3):
        join(database, lee, group)
        join(database, lee, group, present=False)
    for _ in range(20):
        deliverer.deliver_once()
        time.sleep(0.01)
    with database.reader() as session:
        attempts = session.scalar(select(func.max(OutboxMessage.attempts)))
        errors = set(session.scalars(select(OutboxMessage.last_error).distinct()))
    assert attempts >= 3
    assert any(e and "ConnectError" in e for e in errors)
    assert states(database) == {"pending": 12}

    receiver.restart()
    keep_delivering(deliverer, lambda: states(database) == {"delivered": 12})

    assert len(receiver.received) == 12 and receiver.repeats() == 0
    kinds = [e["type"] for e in receiver.received]
    assert kinds == (["grant.created"] * 2 + ["grant.revoked"] * 2) * 3


def test_a_target_that_never_comes_back_dead_letters_and_opens_a_finding(
    database, org, receiver, deliverer
):
    lee, group, _ = org
    target = add_target(database, "webhook", receiver.url, receiver.secret, max_attempts=3)
    receiver.answer = 503
    join(database, lee, group)

    keep_delivering(deliverer, lambda: states(database) == {"dead": 2})

    with database.reader() as session:
        dead = session.scalars(select(OutboxMessage)).all()
        finding = session.scalar(select(Finding).where(Finding.kind == FindingKind.DEAD_LETTERS))
    assert all(m.attempts == 3 and m.last_error.startswith("HTTP 503") for m in dead)
    assert finding.state == "open" and finding.subject_id == str(target.id)
    assert finding.evidence["target"] == "webhook" and finding.severity == "high"
    assert receiver.received == []

    receiver.answer = None
    with database.transaction() as session:
        assert outbox.retry_dead(session, ADMIN, target_id=target.id) == 2
    keep_delivering(deliverer, lambda: states(database) == {"delivered": 2})
    assert [e["type"] for e in receiver.received] == ["grant.created"] * 2
    with database.reader() as session:
        finding = session.get(Finding, finding.id)
    assert finding.state == "resolved"


def test_a_dead_letter_does_not_hold_back_later_messages_for_the_user(
    database, org, receiver, deliverer
):
    lee, group, _ = org
    add_target(database, "webhook", receiver.url, receiver.secret, max_attempts=2)
    receiver.answer = 500
    join(database, lee, group)
    keep_delivering(deliverer, lambda: states(database) == {"dead": 2})
    receiver.answer = None
    join(database, lee, group, present=False)
    keep_delivering(deliverer, lambda: states(database) == {"dead": 2, "delivered": 2})
    assert [e["type"] for e in receiver.received] == ["grant.revoked"] * 2


def test_each_users_events_arrive_in_order_through_failures(database, receiver, deliverer):
    add_target(database, "webhook", receiver.url, receiver.secret, max_attempts=1000)
    with database.transaction() as session:
        org = Org(session, ADMIN)
        group = org.group()
        for n in range(4):
            create_mapping(session, ADMIN, group, org.connector(f"c{n}"), "read")
        users = [org.user() for _ in range(6)]
    for _ in range(3):
        for user in users:
            join(database, user, group)
        for user in users:
            join(database, user, group, present=False)

    served = 0
    original = receiver._app

    def flaky(environ, start_response):  # every third request fails
        nonlocal served
        served += 1
        if served % 3 == 0:
            start_response("500 Oops", [("Content-Type", "text/plain")])
            return [b"oops"]
        return original(environ, start_response)

    receiver.server.app = flaky
    total = 6 * 3 * 8
    keep_delivering(deliverer, lambda: states(database) == {"delivered": total}, timeout=60)

    by_user = defaultdict(list)
    for event in receiver.received:
        by_user[event["data"]["user"]["id"]].append(event["sequence"])
    assert len(by_user) == 6
    for sequences in by_user.values():
        assert sequences == sorted(sequences) and len(sequences) == 24
    assert receiver.repeats() == 0


def test_two_workers_share_the_outbox_without_sending_twice(database, settings, receiver):
    from provisioning.delivery.worker import Deliverer

    add_target(database, "webhook", receiver.url, receiver.secret)
    with database.transaction() as session:
        org = Org(session, ADMIN)
        group = org.group()
        for n in range(5):
            create_mapping(session, ADMIN, group, org.connector(f"c{n}"), "read")
        for _ in range(40):
            org.join(org.user(), group)
    workers = [Deliverer(database, settings, batch=7) for _ in range(2)]
    done: list[int] = []

    def run(worker):
        done.append(worker.drain().delivered)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for worker in workers:
        worker.stop()
    assert sum(done) == 200 and states(database) == {"delivered": 200}
    assert len(receiver.received) == 200 and receiver.repeats() == 0


def test_a_scim_target_answering_garbage_fails_clearly_and_keeps_the_message(
    database, org, receiver, deliverer
):
    lee, group, _ = org
    # A webhook receiver is no SCIM server: discovery gets a 404 page.
    add_target(database, "scim", receiver.url, "token", max_attempts=1000)
    join(database, lee, group)
    for _ in range(3):
        deliverer.deliver_once()
    with database.reader() as session:
        messages = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    assert [m.state for m in messages] == [MessageState.PENDING] * 2
    assert messages[0].last_error and "token" not in messages[0].last_error


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "http://",
        "https://user:pass@example.com/hook",
        "not a url",
        "http://example.com:99999/",
        "https://example.com/hook#frag",
    ],
)
def test_malformed_target_urls_are_refused(url):
    with pytest.raises(TargetError) as refused:
        check_url(url, LOCAL)
    assert refused.value.field == "url"


def test_a_malformed_target_url_writes_nothing(database, receiver):
    with pytest.raises(TargetError):
        add_target(database, "webhook", "ftp://example.com", "s")
    with database.reader() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        from provisioning.delivery.models import Target

        assert session.scalar(select(func.count(Target.id))) == 0


def test_delivered_messages_are_pruned_after_the_retention_and_nothing_else(
    database, org, receiver, deliverer
):
    import datetime as dt

    from jobs.registry import JOBS
    from provisioning.settings import load

    lee, group, _ = org
    add_target(database, "webhook", receiver.url, receiver.secret, max_attempts=1)
    join(database, lee, group)
    deliverer.drain()  # 2 delivered
    receiver.answer = 500
    join(database, lee, group, present=False)
    deliverer.drain()  # 2 dead
    with database.transaction() as session:
        Org(session, ADMIN).join(session.get(User, lee.id), session.get(Group, group.id))
    assert states(database) == {"delivered": 2, "dead": 2, "pending": 2}
    with database.transaction() as session:
        for message in session.scalars(select(OutboxMessage)):
            if message.delivered_at is not None:
                message.delivered_at -= dt.timedelta(days=31)
    settings = load(database_url=database.engine.url.render_as_string(hide_password=False))
    assert JOBS["outbox-prune"].run(database, settings, lambda *_: None) == {"pruned": 2}
    assert states(database) == {"dead": 2, "pending": 2}
