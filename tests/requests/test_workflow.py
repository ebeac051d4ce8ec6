"""Access requests through the domain: approval chains, grants, expiry, refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from provisioning.audit.models import AuditEvent
from provisioning.database import utcnow
from provisioning.delivery.models import OutboxMessage
from provisioning.entitlements.expiry import expire, remind
from provisioning.entitlements.models import Grant
from provisioning.requests import workflow
from provisioning.requests.models import AccessRequest, RequestState, RequestStep
from provisioning.requests.workflow import RequestError
from tests.delivery.conftest import chat_target
from tests.org import Org


def live(session, user_id=None) -> set[tuple]:
    statement = select(Grant.user_id, Grant.connector_id, Grant.access_level).where(
        Grant.revoked_at.is_(None)
    )
    if user_id is not None:
        statement = statement.where(Grant.user_id == user_id)
    return set(session.execute(statement).all())


def actions(session, prefix: str) -> list[str]:
    return list(
        session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.action.like(prefix + "%"))
            .order_by(AuditEvent.id)
        )
    )


def messages(session, kind: str) -> int:
    return len(
        session.scalars(select(OutboxMessage.id).where(OutboxMessage.event_type == kind)).all()
    )


@pytest.fixture
def people(database, origin):
    """owner of the connector, a manager, and their report ada; the connector needs both."""
    with database.transaction() as session:
        chat_target(session, origin)
        org = Org(session, origin)
        owner = org.user("owner@example.com")
        boss = org.user("boss@example.com")
        ada = org.user("ada@example.com", manager_id=str(boss.id))
        connector = org.connector("github", owner="owner@example.com")
        workflow.set_policy(
            session,
            origin,
            connector,
            approvers=["manager", "owner"],
            max_days=14,
            decide_within_days=3,
        )
        return {
            "owner": owner.id,
            "boss": boss.id,
            "ada": ada.id,
            "connector": connector.id,
        }


def _get(session, people):
    from provisioning.connectors.models import Connector
    from provisioning.identity.models import User

    return (
        {k: session.get(User, v) for k, v in people.items() if k != "connector"},
        session.get(Connector, people["connector"]),
    )


def ask(database, origin, people, who="ada", days=7, **kw) -> int:
    with database.transaction() as session:
        users, connector = _get(session, people)
        request = workflow.create(
            session,
            origin,
            users[who],
            users["ada"],
            connector,
            kw.pop("level", "read"),
            justification=kw.pop("justification", "incident 42"),
            duration_days=days,
            **kw,
        )
        return request.id


def decide(database, origin, people, request_id, who, decision="approve"):
    with database.transaction() as session:
        users, _ = _get(session, people)
        request, diff = workflow.decide(session, origin, request_id, users[who], decision, "ok")
        return request.state, len(diff.created)


def test_two_stage_approval_grants_reminds_and_expires(database, origin, people):
    request_id = ask(database, origin, people)
    with database.reader() as session:
        assert live(session) == set()
        assert messages(session, "request.created") == 1
    # The owner may not decide the manager's stage.
    with pytest.raises(RequestError) as refused:
        decide(database, origin, people, request_id, "owner")
    assert refused.value.kind == "forbidden"
    assert decide(database, origin, people, request_id, "boss") == (RequestState.PENDING, 0)
    with database.reader() as session:
        assert live(session) == set()  # one stage of two grants nothing
    assert decide(database, origin, people, request_id, "owner") == (RequestState.APPROVED, 1)
    with database.transaction() as session:
        assert live(session) == {(people["ada"], people["connector"], "read")}
        request = session.get(AccessRequest, request_id)
        assert request.expires_at - request.granted_at == dt.timedelta(days=7)
        steps = session.scalars(select(RequestStep.role).order_by(RequestStep.id)).all()
        assert [str(s) for s in steps] == ["manager", "owner"]
        assert messages(session, "request.decided") == 2
        # A reminder a day before, once.
        session.execute(update(AccessRequest).values(expires_at=utcnow() + dt.timedelta(hours=12)))
        assert remind(session, dt.timedelta(days=1))["requests"] == 1
        assert remind(session, dt.timedelta(days=1))["requests"] == 0
        assert messages(session, "request.expiring") == 1
    with database.transaction() as session:
        session.execute(update(AccessRequest).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
        assert expire(session, origin)["revoked"] == 1
        assert live(session) == set()
        assert actions(session, "request.") == [
            "request.created",
            "request.decided",
            "request.decided",
        ]


def test_denial_grants_nothing_and_closes(database, origin, people):
    request_id = ask(database, origin, people)
    assert decide(database, origin, people, request_id, "boss", "deny") == (RequestState.DENIED, 0)
    with pytest.raises(RequestError) as closed:
        decide(database, origin, people, request_id, "owner")
    assert closed.value.kind == "conflict"
    with database.reader() as session:
        assert live(session) == set()


def test_undecided_request_expires_at_its_deadline(database, origin, people):
    request_id = ask(database, origin, people)
    with database.transaction() as session:
        assert workflow.lapse(session, origin) == 0
        session.execute(update(AccessRequest).values(deadline=utcnow() - dt.timedelta(seconds=1)))
        assert workflow.lapse(session, origin) == 1
        assert session.get(AccessRequest, request_id).state is RequestState.EXPIRED
        assert actions(session, "request.expired") == ["request.expired"]
    with pytest.raises(RequestError):
        decide(database, origin, people, request_id, "boss")


def test_cancel_by_requester_only(database, origin, people):
    request_id = ask(database, origin, people)
    with database.transaction() as session, pytest.raises(RequestError) as refused:
        users, _ = _get(session, people)
        workflow.cancel(session, origin, request_id, users["owner"])
    assert refused.value.kind == "forbidden"
    with database.transaction() as session:
        users, _ = _get(session, people)
        workflow.cancel(session, origin, request_id, users["ada"], "not needed")
        assert session.get(AccessRequest, request_id).state is RequestState.CANCELLED
    with pytest.raises(RequestError):
        decide(database, origin, people, request_id, "boss")


def test_approver_is_never_the_requester(database, origin, people):
    # The manager asks for ada: the manager stage would be decided by the requester.
    with pytest.raises(RequestError) as refused:
        ask(database, origin, people, who="boss")
    assert refused.value.kind == "conflict"
    # With an owner-only chain, the manager may ask for a report; the owner decides.
    with database.transaction() as session:
        _, connector = _get(session, people)
        workflow.set_policy(
            session, origin, connector, approvers=["owner"], max_days=14, decide_within_days=3
        )
    request_id = ask(database, origin, people, who="boss")
    with database.reader() as session:
        request = session.get(AccessRequest, request_id)
        assert (request.user_id, request.requested_by_id) == (people["ada"], people["boss"])
    assert decide(database, origin, people, request_id, "owner") == (RequestState.APPROVED, 1)
    # The owner asking for their own access cannot approve it.
    with database.transaction() as session, pytest.raises(RequestError) as own:
        users, connector = _get(session, people)
        workflow.create(
            session,
            origin,
            users["owner"],
            users["owner"],
            connector,
            "read",
            justification="mine",
            duration_days=1,
        )
    assert own.value.kind == "conflict"


def test_someone_else_may_not_ask_for_a_person(database, origin, people):
    with pytest.raises(RequestError) as refused:
        ask(database, origin, people, who="owner")
    assert refused.value.kind == "forbidden"


@pytest.mark.parametrize(
    ("change", "kw", "field"),
    [
        (None, {"days": 15}, "duration_days"),
        (None, {"days": 0}, "duration_days"),
        (None, {"justification": "  "}, "justification"),
        (None, {"level": "interactive"}, None),
        (None, {"actions": ["nope"]}, None),
        ({"enabled": False}, {}, "connector"),
        ({"publisher": "third_party", "security_review": "pending"}, {}, "connector"),
    ],
)
def test_bad_requests_change_nothing(database, origin, people, change, kw, field):
    from provisioning.connectors.models import Connector

    if change:
        with database.transaction() as session:
            session.execute(update(Connector).values(**change))
    with pytest.raises(RequestError) as refused:
        ask(database, origin, people, **kw)
    assert refused.value.kind == "invalid"
    if field:
        assert refused.value.field == field
    with database.reader() as session:
        assert session.scalars(select(AccessRequest)).all() == []


def test_connector_without_policy_takes_no_requests(database, origin, people):
    with database.transaction() as session:
        _, connector = _get(session, people)
        workflow.remove_policy(session, origin, connector)
    with pytest.raises(RequestError) as refused:
        ask(database, origin, people)
    assert refused.value.kind == "conflict"


def test_one_pending_request_per_access(database, origin, people):
    ask(database, origin, people)
    with pytest.raises(RequestError) as refused:
        ask(database, origin, people)
    assert refused.value.kind == "conflict"


def test_the_expiry_job_lapses_undecided_requests_and_revokes_expired_access(
    database, origin, people
):
    from jobs.runner import run_job
    from provisioning.settings import load

    undecided = ask(database, origin, people)
    with database.transaction() as session:
        session.execute(update(AccessRequest).values(deadline=utcnow() - dt.timedelta(seconds=1)))
    granted = ask(database, origin, people)
    decide(database, origin, people, granted, "boss")
    decide(database, origin, people, granted, "owner")
    with database.transaction() as session:
        session.execute(
            update(AccessRequest)
            .where(AccessRequest.id == granted)
            .values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )
    run = run_job(database, load(database_url=database.url), "expiry")
    assert run.outcome == "succeeded", run
    assert run.counts["requests_lapsed"] == 1 and run.counts["revoked"] == 1
    with database.reader() as session:
        assert session.get(AccessRequest, undecided).state is RequestState.EXPIRED
        assert live(session) == set()
