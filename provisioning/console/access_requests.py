"""The console's access-request pages: a person asks, their approvers decide, they cancel.

Every rule (who may ask, the duration bound, who decides a stage, approver ≠ requester,
separation of duties) is :mod:`provisioning.requests.workflow`'s; these views only read
the form, call it as the signed-in person and show what it answered.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import g, redirect, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from provisioning.connectors.models import AccessLevel, Connector
from provisioning.console.auth import Role, console, needs, refusal
from provisioning.console.pages import _database, page
from provisioning.identity import directory
from provisioning.identity.models import User
from provisioning.requests import reads, workflow
from provisioning.requests.models import RequestDecision, RequestPolicy

# workflow.RequestError.kind -> the page's status
_STATUS = {"invalid": 422, "conflict": 409, "separation": 409, "forbidden": 403, "not-found": 404}


class _NoPerson(Exception):
    pass


def _me(session: Session) -> User:
    """The signed-in person as an active user of the directory, or :class:`_NoPerson`."""
    user = directory.person(session, g.person.user_id) if g.person.user_id else None
    if user is None:
        raise _NoPerson
    return user


def _no_person() -> Any:
    return refusal(
        403,
        "Requests are made and decided by people",
        f"You signed in as {g.person.name}, which is no active person of the directory: "
        "sign in through the identity provider, or with a token bound to you "
        "(provisioning token create --person).",
    )


@console.get("/requests")
@needs(Role.REQUESTER)
def requests() -> Any:
    """What awaits the person's decision, what they asked for, what they may ask for."""
    with _database().reader() as session:
        try:
            me = _me(session)
        except _NoPerson:
            return _no_person()
        inbox = reads.awaiting(session, me)
        mine = reads.asked_by(session, me)
        steps = reads.steps(session, [r.id for r, _ in inbox + mine])
        names = _names(session, {r.user_id for r, _ in inbox})
        offered = reads.requestable(session)
        return page(
            "requests.html",
            me=me,
            inbox=inbox,
            mine=mine,
            steps=steps,
            names=names,
            offered=offered,
        )


def _names(session: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.user_name).where(User.id.in_(ids))).all())


def _form_page(session: Session, slug: str, status: int = 200, **context: Any) -> Any:
    found = session.execute(
        select(Connector, RequestPolicy)
        .join(RequestPolicy, RequestPolicy.connector_id == Connector.id)
        .options(selectinload(Connector.actions))
        .where(Connector.slug == slug)
    ).first()
    if found is None:
        return refusal(404, "Not requestable", f"Connector {slug} takes no access requests.")
    connector, policy = found
    context.setdefault("form", {})
    context.setdefault("error", None)
    form = context["form"]
    context["ticked"] = form.getlist("actions") if hasattr(form, "getlist") else []
    return page(
        "request_new.html",
        status,
        connector=connector,
        policy=policy,
        levels=[level.value for level in AccessLevel],
        **context,
    )


@console.get("/requests/new")
@needs(Role.REQUESTER)
def new_request() -> Any:
    slug = (request.args.get("connector") or "").strip()[:100]
    with _database().reader() as session:
        return _form_page(session, slug)


@console.post("/requests")
@needs(Role.REQUESTER)
def ask() -> Any:
    """Ask for a connector for oneself, through :func:`workflow.create`."""
    form = request.form
    slug = (form.get("connector") or "").strip()[:100]
    level = form.get("access_level", "")
    actions = [a for a in form.getlist("actions") if a][:200] or None
    justification = (form.get("justification") or "").strip()[:2000]
    problem: str | None = None
    try:
        days = int(form.get("duration_days", ""))
    except ValueError:
        days, problem = 0, "The duration is a whole number of days."
    if level not in {lvl.value for lvl in AccessLevel}:
        problem = "Choose an access level."
    try:
        with _database().transaction() as session:  # a refusal rolls it all back
            me = _me(session)
            connector = session.scalar(select(Connector).where(Connector.slug == slug))
            if connector is None:
                raise workflow.RequestError(f"there is no connector {slug}", "not-found")
            if problem is not None:
                raise workflow.RequestError(problem)
            created_id = workflow.create(
                session,
                g.person.origin,
                me,
                me,
                connector,
                level,
                justification=justification,
                duration_days=days,
                actions=actions,
            ).id
    except _NoPerson:
        return _no_person()
    except workflow.RequestError as exc:
        if exc.kind == "not-found":
            return refusal(404, "Not requestable", f"{exc}.")
        with _database().reader() as session:
            return _form_page(session, slug, _STATUS.get(exc.kind, 422), form=form, error=str(exc))
    return redirect(url_for("console.requests", _anchor=f"request-{created_id}"), 303)


@console.post("/requests/<int:request_id>/decision")
@needs(Role.REQUESTER)
def decide_request(request_id: int) -> Any:
    """The person decides the request's current stage, if :func:`workflow.decide` says
    it is theirs."""
    decision = request.form.get("decision")
    if decision not in {d.value for d in RequestDecision}:
        return refusal(422, "Choose a decision", "Approve or deny; nothing was changed.")
    comment = (request.form.get("comment") or "").strip()[:1000] or None
    return _act(
        lambda session, me: workflow.decide(
            session, g.person.origin, request_id, me, decision, comment
        )
    )


@console.post("/requests/<int:request_id>/cancel")
@needs(Role.REQUESTER)
def cancel_request(request_id: int) -> Any:
    reason = (request.form.get("reason") or "").strip()[:1000] or None
    return _act(
        lambda session, me: workflow.cancel(session, g.person.origin, request_id, me, reason)
    )


def _act(change: Any) -> Any:
    """Run ``change`` as the signed-in person in one transaction: all of it, or nothing."""
    try:
        with _database().transaction() as session:
            change(session, _me(session))
    except _NoPerson:
        return _no_person()
    except workflow.RequestError as exc:
        status = _STATUS.get(exc.kind, 422)
        return refusal(status, "Refused", f"{exc}. Nothing was changed.")
    return redirect(url_for("console.requests"), 303)
