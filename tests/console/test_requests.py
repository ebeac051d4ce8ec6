"""Access requests in the console (Flask's test client): token sign-in as the bound person,
asking, the approver's inbox, deciding and cancelling, each as the domain allows, and the
requester's role seeing nothing else."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from provisioning.audit.log import Origin, Source
from provisioning.audit.models import AuditEvent
from provisioning.connectors.models import Connector
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
from provisioning.people.lifecycle import set_active
from provisioning.requests.models import AccessRequest
from provisioning.tokens import credentials
from tests.console.conftest import Console
from tests.org import Org


def _requests(database) -> list[AccessRequest]:
    with database.reader() as session:
        return list(session.scalars(select(AccessRequest).order_by(AccessRequest.id)))


def _wiki_grants(database, user_id: str) -> int:
    with database.reader() as session:
        wiki = session.scalar(select(Connector.id).where(Connector.slug == "wiki"))
        return session.scalar(
            select(func.count()).where(
                Grant.user_id == uuid.UUID(user_id),
                Grant.connector_id == wiki,
                Grant.revoked_at.is_(None),
            )
        )


def _events(database, action: str) -> list[AuditEvent]:
    with database.reader() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _ask(console: Console, **form) -> object:
    return console.post(
        "/console/requests",
        {
            "connector": "wiki",
            "access_level": "read",
            "duration_days": "7",
            "justification": "writing the runbook",
            **form,
        },
    )


def _signed(app, token: str) -> Console:
    console = Console(app)
    assert console.sign_in(token).status_code == 302
    return console


def test_a_token_bound_to_a_person_signs_in_as_that_person(console, seeded, asking, database):
    answer = console.sign_in(asking.ada)
    assert answer.headers["Location"].endswith("/console/requests")
    (event,) = _events(database, "console.signed_in")
    assert event.actor == "ada@example.com"
    assert str(event.user_id) == seeded.ada
    assert event.after == {"role": "requester", "via": "token", "token": "ada-cli"}
    assert "ada@example.com" in console.get("/console/requests").get_data(as_text=True)


def test_a_token_bound_to_a_departed_person_signs_nobody_in(
    console, seeded, asking, database, origin
):
    with database.transaction() as session:
        set_active(session, origin, session.get(User, uuid.UUID(seeded.ada)), False)
    answer = console.sign_in(asking.ada)
    assert answer.status_code == 401
    assert "no longer an active user" in answer.get_data(as_text=True)
    assert _events(database, "console.signed_in") == []


def test_a_person_asks_and_their_manager_approves(app, seeded, asking, database):
    ada, bob, mgr = (_signed(app, t) for t in (asking.ada, asking.bob, asking.mgr))
    form = ada.get("/console/requests/new?connector=wiki").get_data(as_text=True)
    assert 'max="14"' in form
    answer = _ask(ada)
    assert answer.status_code == 303
    (request,) = _requests(database)
    assert (str(request.state), str(request.user_id), request.requested_by) == (
        "pending",
        seeded.ada,
        "ada@example.com",
    )
    (created,) = _events(database, "request.created")
    assert created.actor == "ada@example.com"
    assert f'id="request-{request.id}-state">pending' in ada.get("/console/requests").get_data(
        as_text=True
    )

    # Only the stage's approver sees it, and only they decide it.
    assert f"decide-{request.id}" not in bob.get("/console/requests").get_data(as_text=True)
    assert f"decide-{request.id}" not in ada.get("/console/requests").get_data(as_text=True)
    for outsider in (bob, ada):
        refused = outsider.post(f"/console/requests/{request.id}/decision", {"decision": "approve"})
        assert refused.status_code == 403
        assert "Nothing was changed" in refused.get_data(as_text=True)
    assert str(_requests(database)[0].state) == "pending"
    assert _wiki_grants(database, seeded.ada) == 0

    inbox = mgr.get("/console/requests").get_data(as_text=True)
    assert f'id="decide-{request.id}"' in inbox
    assert "ada@example.com asks for wiki" in inbox
    answer = mgr.post(
        f"/console/requests/{request.id}/decision", {"decision": "approve", "comment": "fine"}
    )
    assert answer.status_code == 303
    (request,) = _requests(database)
    assert str(request.state) == "approved"
    assert _wiki_grants(database, seeded.ada) == 1
    (decided,) = _events(database, "request.decided")
    assert (decided.actor, decided.reason, decided.after["approver"]) == (
        "mgr@example.com",
        "fine",
        "mgr@example.com",
    )
    # Ada's page says why she holds wiki: the request, its justification and its end.
    admin = _signed(app, seeded.admin_token)
    why = admin.get(f"/console/people/{seeded.ada}").get_data(as_text=True)
    assert f"access request request:{request.id}: “writing the runbook”" in why
    # Decided once: the same form again changes nothing.

    again = mgr.post(f"/console/requests/{request.id}/decision", {"decision": "deny"})
    assert again.status_code == 409
    assert str(_requests(database)[0].state) == "approved"


def test_the_requester_cancels_and_nobody_else_does(app, seeded, asking, database):
    ada, bob = _signed(app, asking.ada), _signed(app, asking.bob)
    _ask(ada)
    (request,) = _requests(database)
    assert bob.post(f"/console/requests/{request.id}/cancel", {}).status_code == 403
    assert str(_requests(database)[0].state) == "pending"
    answer = ada.post(f"/console/requests/{request.id}/cancel", {"reason": "not needed"})
    assert answer.status_code == 303
    assert str(_requests(database)[0].state) == "cancelled"
    (event,) = _events(database, "request.cancelled")
    assert (event.actor, event.reason) == ("ada@example.com", "not needed")


def test_a_bad_request_form_is_refused_on_the_page_and_makes_nothing(app, asking, database):
    ada = _signed(app, asking.ada)
    for form, message in (
        ({"duration_days": "15"}, "duration_days is between 1"),
        ({"duration_days": "soon"}, "whole number of days"),
        ({"access_level": "root"}, "Choose an access level"),
        ({"justification": "  "}, "needs a justification"),
        ({"actions": "no_such_action"}, "no_such_action"),
    ):
        answer = _ask(ada, **form)
        assert answer.status_code == 422, form
        assert message in answer.get_data(as_text=True)
    assert _ask(ada, connector="github").status_code == 404  # github takes no requests
    assert _requests(database) == []
    # Asked twice (a double-submitted form): one request.
    assert _ask(ada).status_code == 303
    again = _ask(ada)
    assert again.status_code == 409
    assert "already pending" in again.get_data(as_text=True)
    assert len(_requests(database)) == 1


def test_a_decision_without_the_csrf_token_changes_nothing(app, asking, database):
    ada, mgr = _signed(app, asking.ada), _signed(app, asking.mgr)
    _ask(ada)
    (request,) = _requests(database)
    path = f"/console/requests/{request.id}/decision"
    assert mgr.post(path, {"decision": "approve"}, csrf=False).status_code == 400
    assert str(_requests(database)[0].state) == "pending"
    # Hostile forms: no such request, no such decision.
    assert mgr.post("/console/requests/999/decision", {"decision": "approve"}).status_code == 404
    assert ada.post("/console/requests/999/cancel", {}).status_code == 404
    assert mgr.post(path, {"decision": "maybe"}).status_code == 422
    assert str(_requests(database)[0].state) == "pending"


def test_a_requester_sees_only_the_requests_pages(app, seeded, asking, database):
    ada = _signed(app, asking.ada)
    nav = ada.get("/console/requests").get_data(as_text=True)
    assert "Requests</a>" in nav
    assert "People</a>" not in nav
    for path in ("/console/", "/console/people", f"/console/people/{seeded.ada}", "/console/audit"):
        assert ada.get(path).status_code == 403, path
    assert ada.post("/console/connectors/wiki/enabled", {"enabled": "false"}).status_code == 403
    assert ada.post("/console/mappings", {}).status_code == 403


def test_a_session_without_a_person_cannot_ask_or_decide(app, seeded, asking, database):
    admin = _signed(app, seeded.admin_token)  # a service's token: bound to nobody
    nav = admin.get("/console/").get_data(as_text=True)
    assert "Requests</a>" not in nav
    page = admin.get("/console/requests")
    assert page.status_code == 403
    assert "no active person" in page.get_data(as_text=True)
    assert _ask(admin).status_code == 403
    assert _requests(database) == []


def test_an_unbound_token_named_like_a_person_is_not_that_person(app, database, origin, seeded):
    with database.transaction() as session:
        Org(session, origin).user("olga", manager_id="mgr@example.com")
        token = credentials.create(session, "olga", ["requests:write"], Origin("t", Source.CLI))
    console = _signed(app, token)
    page = console.get("/console/requests")
    assert page.status_code == 403
    assert "no active person" in page.get_data(as_text=True)
    (event,) = _events(database, "console.signed_in")
    assert (event.actor, event.user_id) == ("olga", None)
