"""The console's pages: each reads through the domain and changes things only through it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from flask import g, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.api.edge import changes
from provisioning.audit.models import AuditEvent
from provisioning.connectors import catalogue
from provisioning.connectors.governance import GovernanceError, enablement_problems
from provisioning.connectors.models import AccessLevel, Connector
from provisioning.console import charts
from provisioning.console.auth import Role, console, needs, refusal
from provisioning.database import Database
from provisioning.delivery import outbox
from provisioning.entitlements import access
from provisioning.entitlements import mappings as mapping_rules
from provisioning.entitlements.models import Mapping
from provisioning.entitlements.previews import preview
from provisioning.identity import directory
from provisioning.identity.models import Group, User
from provisioning.offboarding import requests as offboardings
from provisioning.oversight.overview import overview as read_overview
from provisioning.reviews import campaigns
from provisioning.reviews.models import ReviewDecision, ReviewItem

__all__ = ["console"]


def _database() -> Database:
    from flask import current_app

    return current_app.extensions["provisioning.database"]


def page(template: str, status: int = 200, **context: Any) -> Any:
    """A page, or only its main region when htmx asks for a partial update."""
    context.setdefault("person", g.person)
    context["partial"] = request.headers.get("HX-Request") == "true" and not request.headers.get(
        "HX-Boosted"
    )
    return render_template(template, **context), status


@console.get("/")
@needs(Role.VIEWER)
def overview() -> Any:
    with _database().reader() as session:
        seen = read_overview(session)
    chart = charts.bars([(d.day, d.granted, d.revoked) for d in seen.days])
    return page("overview.html", seen=seen, chart=chart, now=dt.datetime.now(dt.UTC))


# -- people ---------------------------------------------------------------------------


@console.get("/people")
@needs(Role.VIEWER)
def people() -> Any:
    query = (request.args.get("q") or "").strip()[:200]
    with _database().reader() as session:
        statement = select(User).where(User.deleted_at.is_(None))
        if query:
            statement = statement.where(directory.matching(query))
        found = session.scalars(statement.order_by(User.user_name_key).limit(50)).all()
        rows = [(u.id, u.user_name, u.display_name, u.department, str(u.state)) for u in found]
    template = "people_results.html" if request.headers.get("HX-Request") else "people.html"
    return page(template, query=query, rows=rows)


def _person(session: Session, user_id: str) -> User | None:
    try:
        return session.get(User, uuid.UUID(user_id))
    except ValueError:
        return None


@console.get("/people/<user_id>")
@needs(Role.VIEWER)
def person_page(user_id: str) -> Any:
    with _database().reader() as session:
        user = _person(session, user_id)
        if user is None:
            return refusal(404, "No such person", f"There is no person {user_id}.")
        groups = directory.groups_of(session, user.id)
        grants = access.of_user(session, user)
        history = [
            (o, outbox.acknowledgements(session, o.outbox_ids))
            for o in offboardings.of_person(session, user.id)
        ]
        return page(
            "person.html",
            user=user,
            state=str(user.state),
            groups=groups,
            grants=grants,
            history=history,
            form_key=uuid.uuid4().hex,
            error=None,
        )


@console.post("/people/<user_id>/offboard")
@needs(Role.ADMIN)
def offboard(user_id: str) -> Any:
    """Offboard now or on a date, once the admin has confirmed; a resubmitted form is the
    same request (its key), never a second one."""
    form = request.form
    reason = (form.get("reason") or "").strip()
    when = (form.get("effective_on") or "").strip()
    problem = None
    effective_at = None
    if form.get("confirm") != "yes":
        problem = "Tick the confirmation box to offboard this person."
    elif not reason:
        problem = "Give a reason."
    elif when:
        try:
            effective_at = dt.datetime.combine(dt.date.fromisoformat(when), dt.time(), dt.UTC)
        except ValueError:
            problem = "The date must be YYYY-MM-DD."
    with _database().transaction() as session:
        user = _person(session, user_id)
        if user is None:
            return refusal(404, "No such person", f"There is no person {user_id}.")
        if problem is None:
            try:
                offboardings.request(
                    session,
                    g.person.origin,
                    identified_by="userName",
                    identifier=user.user_name,
                    reason=reason,
                    effective_at=effective_at,
                    idempotency_key="console:" + (form.get("form_key") or uuid.uuid4().hex)[:64],
                )
            except offboardings.OffboardingError as exc:
                problem = str(exc)
    if problem is not None:
        with _database().reader() as session:
            user = _person(session, user_id)
            return page(
                "person.html",
                422,
                user=user,
                state=str(user.state),
                groups=directory.groups_of(session, user.id),
                grants=access.of_user(session, user),
                history=[],
                form_key=form.get("form_key") or uuid.uuid4().hex,
                error=problem,
            )
    return redirect(url_for("console.person_page", user_id=user_id), 303)


# -- reviews --------------------------------------------------------------------------


@console.get("/reviews")
@needs(Role.REVIEWER)
def reviews() -> Any:
    with _database().reader() as session:
        items = campaigns.inbox(session, g.person.name)
    return page("reviews.html", items=items, error=None)


@console.post("/reviews/<int:item_id>")
@needs(Role.REVIEWER)
def decide(item_id: int) -> Any:
    decision = request.form.get("decision")
    comment = (request.form.get("comment") or "").strip() or None
    if decision not in {d.value for d in ReviewDecision}:
        return refusal(422, "Choose a decision", "Approve or revoke.")
    if decision == ReviewDecision.REVOKE and not comment:
        return refusal(422, "A comment is needed", "Say why the access should be revoked.")
    with _database().transaction() as session:
        item = session.get(ReviewItem, item_id)
        if item is None or item.reviewer != g.person.name:
            return refusal(
                404, "Not in your inbox", f"Review item {item_id} is not yours to decide."
            )
        try:
            campaigns.decide(session, g.person.origin, item, ReviewDecision(decision), comment)
        except campaigns.ReviewError as exc:
            return refusal(409, "The campaign is closed", str(exc))
    return redirect(url_for("console.reviews"), 303)


# -- connectors -----------------------------------------------------------------------


@console.get("/connectors")
@needs(Role.VIEWER)
def connectors() -> Any:
    with _database().reader() as session:
        rows = [
            (c, enablement_problems(c))
            for c in session.scalars(select(Connector).order_by(Connector.slug))
        ]
    return page("connectors.html", rows=rows, error=None)


@console.post("/connectors/<slug>/enabled")
@needs(Role.ADMIN)
def set_enabled(slug: str) -> Any:
    enable = request.form.get("enabled") == "true"
    with _database().transaction() as session:
        connector = session.scalar(
            select(Connector).where(Connector.slug == slug).with_for_update()
        )
        if connector is None:
            return refusal(404, "No such connector", f"There is no connector {slug}.")
        try:
            catalogue.update_connector(session, g.person.origin, connector, enabled=enable)
        except GovernanceError as exc:
            error = str(exc)
        else:
            error = None
    if error is not None:
        with _database().reader() as session:
            rows = [
                (c, enablement_problems(c))
                for c in session.scalars(select(Connector).order_by(Connector.slug))
            ]
        return page("connectors.html", 409, rows=rows, error=error)
    return redirect(url_for("console.connectors"), 303)


# -- mappings -------------------------------------------------------------------------


def _mapping_choices(session: Session) -> dict[str, Any]:
    listed = session.execute(
        select(Mapping, Group.display_name, Connector.slug)
        .join(Group, Group.id == Mapping.group_id)
        .join(Connector, Connector.id == Mapping.connector_id)
        .order_by(Group.display_name, Connector.slug)
    ).all()
    return {
        "mappings": listed,
        "groups": session.execute(
            select(Group.id, Group.display_name).order_by(Group.display_name_key)
        ).all(),
        "connectors": session.scalars(select(Connector.slug).order_by(Connector.slug)).all(),
        "levels": [level.value for level in AccessLevel],
    }


@console.get("/mappings")
@needs(Role.VIEWER)
def mappings() -> Any:
    with _database().reader() as session:
        return page("mappings.html", form={}, diff=None, error=None, **_mapping_choices(session))


class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


def _create(form: Any) -> Any:
    """The mapping the form asks for, made through the domain in a session; the change."""
    level = form.get("access_level", "")
    if level not in {lvl.value for lvl in AccessLevel}:
        raise _Invalid("Choose an access level.")
    expires_at = None
    if form.get("expires_on"):
        try:
            expires_at = dt.datetime.combine(
                dt.date.fromisoformat(form["expires_on"]), dt.time(), dt.UTC
            )
        except ValueError:
            raise _Invalid("The expiry date must be YYYY-MM-DD.") from None

    def change(session: Session) -> dict[str, Any]:
        try:
            group = session.get(Group, uuid.UUID(form.get("group_id", "")))
        except ValueError:
            group = None
        if group is None:
            raise _Invalid("Choose a group.")
        connector = session.scalar(select(Connector).where(Connector.slug == form.get("connector")))
        if connector is None:
            raise _Invalid("Choose a connector.")
        try:
            _, diff = mapping_rules.create_mapping(
                session,
                g.person.origin,
                group,
                connector,
                AccessLevel(level),
                expires_at=expires_at,
                description=(form.get("description") or "").strip() or None,
            )
        except mapping_rules.MappingError as exc:
            raise _Invalid(str(exc)) from None
        return changes(session, diff, dry_run=False)

    return change


@console.post("/mappings")
@needs(Role.ADMIN)
def create_mapping() -> Any:
    """First a dry run (who gains, who loses, what the brake would hold), then the commit
    of the very same form once the admin confirms it."""
    form = request.form
    committing = form.get("confirm") == "yes"
    try:
        change = _create(form)
        if committing:
            with _database().transaction() as session:
                diff = change(session)
        else:
            diff = preview(_database(), change)
        error = None
    except _Invalid as exc:
        diff, error = None, str(exc)
    with _database().reader() as session:
        choices = _mapping_choices(session)
    status = 422 if error else 200
    return page(
        "mappings.html",
        status,
        form=form,
        diff=diff,
        committed=committing and error is None,
        error=error,
        **choices,
    )


# -- audit ----------------------------------------------------------------------------


@console.get("/audit")
@needs(Role.VIEWER)
def audit() -> Any:
    actor = (request.args.get("actor") or "").strip()[:255]
    subject = (request.args.get("subject") or "").strip()[:255]
    statement = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(100)
    if actor:
        statement = statement.where(AuditEvent.actor == actor)
    if subject:
        statement = statement.where(AuditEvent.subject_id == subject)
    with _database().reader() as session:
        events = session.scalars(statement).all()
    return page("audit.html", events=events, actor=actor, subject=subject)
