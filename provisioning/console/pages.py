"""The console's pages: each reads through the domain and changes things only through it."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import Response, g, redirect, render_template, request, stream_with_context, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from provisioning.api.edge import changes
from provisioning.audit import log as audit_log
from provisioning.audit.models import AuditEvent
from provisioning.connectors import catalogue
from provisioning.connectors.governance import GovernanceError, enablement_problems
from provisioning.connectors.models import AccessLevel, Connector
from provisioning.console import charts
from provisioning.console.auth import Role, console, needs, refusal
from provisioning.database import Database
from provisioning.delivery import outbox
from provisioning.delivery.models import MessageState, OutboxMessage, Target
from provisioning.entitlements import access
from provisioning.entitlements import mappings as mapping_rules
from provisioning.entitlements.models import Mapping
from provisioning.entitlements.previews import preview
from provisioning.identity import directory
from provisioning.identity.models import Group, User
from provisioning.offboarding import requests as offboardings
from provisioning.oversight import findings as finding_rules
from provisioning.oversight.models import Finding, FindingKind, FindingState
from provisioning.oversight.overview import activity, open_findings, speed, totals
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


KEPT_SECONDS = 60.0
"""How long the overview's totals, chart and latencies are kept per process (the people are
counted over their table, the latencies read the day's revocations and deliveries); open
findings and delivery are read live."""


def _kept(name: str, read: Callable[[Session], Any]) -> tuple[Any, dt.datetime]:
    """What ``read`` answered within the last minute, and when it was read."""
    from flask import current_app

    kept = current_app.extensions.setdefault("provisioning.console.kept", {})
    now = time.monotonic()
    if name not in kept or kept[name][0] <= now:
        with _database().reader() as session:
            kept[name] = (now + KEPT_SECONDS, read(session), dt.datetime.now(dt.UTC))
    return kept[name][1], kept[name][2]


@console.get("/")
@needs(Role.VIEWER)
def overview() -> Any:
    counts, counted_at = _kept("totals", totals)
    days, _ = _kept("activity", lambda session: activity(session, 30))
    fast, _ = _kept("speed", speed)
    with _database().reader() as session:
        findings_open = open_findings(session)
        targets = outbox.health(session)
    return page(
        "overview.html",
        counts=counts,
        counted_at=counted_at,
        findings=findings_open,
        targets=targets,
        days=days,
        chart=charts.bars([(d.day, d.granted, d.revoked) for d in days]),
        speed=fast,
        now=dt.datetime.now(dt.UTC),
    )


@console.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """A latency as people read it: 340 ms, 4.2 s, 12 min, 3.5 h; "none" for nothing timed."""
    if seconds is None:
        return "none"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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


class _Refused(Exception):
    """Stops a transaction (rolled back) with what to tell the person."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


@console.get("/reviews")
@needs(Role.REVIEWER)
def reviews() -> Any:
    with _database().reader() as session:
        fallback = _fallback_reviewer(session)
        decider = g.person.user_id and fallback and str(fallback.id) == g.person.user_id
        items = campaigns.inbox(session, g.person.name, unreviewed=bool(decider))
        names = {item.campaign_id: name for item, name in items}
        progress = campaigns.tally(session, sorted(names))
    return page("reviews.html", items=items, names=names, progress=progress)


def _decide(item_ids: list[int], decision: str | None, comment: str | None, *, bulk: bool) -> Any:
    """Record the person's decision on each of their items, all or none."""
    if decision not in {d.value for d in ReviewDecision}:
        return refusal(422, "Choose a decision", "Keep or revoke; nothing was changed.")
    if (bulk or decision == ReviewDecision.REVOKE) and not comment:
        why = "A decision on several items" if bulk else "Revoking"
        return refusal(422, "A comment is needed", f"{why} needs a comment; nothing was changed.")
    if not item_ids:
        return refusal(422, "Choose items", "Tick the items to decide; nothing was changed.")
    try:
        with _database().transaction() as session:
            decider = session.get(User, uuid.UUID(g.person.user_id)) if g.person.user_id else None
            fallback = _fallback_reviewer(session)
            for item_id in item_ids:
                item = session.get(ReviewItem, item_id)
                try:
                    if item is None:
                        raise campaigns.NotReviewer(f"there is no review item {item_id}")
                    # The domain says who may decide; here, only the reviewer, or the
                    # configured fallback reviewer (any admin's fallback and an override
                    # are the API's).
                    role = campaigns.decider_role(
                        item, decider, override=False, comment=comment, fallback=fallback
                    )
                    if role != "reviewer" and (role != "fallback" or fallback is None):
                        raise campaigns.NotReviewer(f"item {item_id} is not yours to decide")
                    campaigns.decide(
                        session,
                        g.person.origin,
                        item,
                        ReviewDecision(decision),
                        comment,
                        decider=decider,
                        fallback=fallback,
                    )
                except campaigns.NotReviewer as exc:
                    raise _Refused(404, "Not in your inbox", f"{exc}.") from None
                except campaigns.ReviewError as exc:
                    raise _Refused(409, "The campaign is closed", str(exc)) from None
    except _Refused as refused:  # rolled back: nothing was decided
        return refusal(refused.status, refused.title, f"{refused.detail} Nothing was changed.")
    return redirect(url_for("console.reviews"), 303)


@console.post("/reviews/<int:item_id>")
@needs(Role.REVIEWER)
def decide(item_id: int) -> Any:
    comment = (request.form.get("comment") or "").strip() or None
    return _decide([item_id], request.form.get("decision"), comment, bulk=False)


@console.post("/reviews")
@needs(Role.REVIEWER)
def decide_many() -> Any:
    try:
        ids = sorted({int(i) for i in request.form.getlist("items")})
    except ValueError:
        return refusal(422, "Choose items", "Those are not review items; nothing was changed.")
    comment = (request.form.get("comment") or "").strip() or None
    return _decide(ids[:500], request.form.get("decision"), comment, bulk=True)


# -- connectors -----------------------------------------------------------------------


@console.get("/connectors")
@needs(Role.VIEWER)
def connectors() -> Any:
    with _database().reader() as session:
        rows = [
            (c, enablement_problems(c))
            for c in session.scalars(
                select(Connector).options(selectinload(Connector.actions)).order_by(Connector.slug)
            )
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
                for c in session.scalars(
                    select(Connector)
                    .options(selectinload(Connector.actions))
                    .order_by(Connector.slug)
                )
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


SHOWN_VIOLATIONS = 50
"""How many of the separation-of-duties violations a mapping change would begin its dry run
lists (all are counted)."""


def _confirmation(form: Any, committing: bool) -> mapping_rules.Confirmation | None:
    """The admin's confirmation of the violations a change begins: the tick and a reason (a
    dry run goes on as if confirmed)."""
    if not committing:
        return mapping_rules.DRY_RUN
    if form.get("accept_violations") == "yes":
        return mapping_rules.Confirmation.of(form.get("reason"))
    return None


def _asked(form: Any, committing: bool) -> dict[str, Any]:
    """What a new or changed mapping's form says besides its level and expiry."""
    return {
        "description": (form.get("description") or "").strip() or None,
        "confirmation": _confirmation(form, committing),
    }


def _shown(session: Session, make: Callable[[], Any], committing: bool) -> dict[str, Any]:
    """The change ``make`` makes through the domain, as the page shows it: who gains, loses
    and changes level, and the first violations the domain found it begins, with their
    count; refused (:class:`_Invalid`) as the domain refuses it."""
    try:
        diff = make()
    except mapping_rules.SeparationViolations as exc:
        raise _Invalid(
            f"{exc}. To make it anyway, tick “I accept these violations” and say why."
        ) from None
    except mapping_rules.MappingError as exc:
        raise _Invalid(str(exc)) from None
    return {
        **changes(session, diff, dry_run=not committing),
        "violations": diff.violations[:SHOWN_VIOLATIONS],
        "violations_total": len(diff.violations),
    }


def _create(form: Any, committing: bool) -> Any:
    """The mapping the form asks for, made through the domain in a session; the change."""
    level = form.get("access_level", "")
    if level not in {lvl.value for lvl in AccessLevel}:
        raise _Invalid("Choose an access level.")
    expires_at = _expiry(form.get("expires_on"))

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
        return _shown(
            session,
            lambda: mapping_rules.create_mapping(
                session,
                g.person.origin,
                group,
                connector,
                AccessLevel(level),
                expires_at=expires_at,
                **_asked(form, committing),
            )[1],
            committing,
        )

    return change


def _dry_run_again(dry_run: Callable[[], Callable[[Session], Any]]) -> Any:
    """After a refused commit, the dry run once more (so the form can be confirmed), or
    nothing if the change cannot be made at all."""
    try:
        return preview(_database(), dry_run())
    except _Invalid:
        return None


@console.post("/mappings")
@needs(Role.ADMIN)
def create_mapping() -> Any:
    """First a dry run (who gains, who loses, what the brake would hold, which
    separation-of-duties violations it would begin), then the commit of the very same form
    once the admin confirms it (and accepts those violations, with a reason)."""
    form = request.form
    committing = form.get("confirm") == "yes"
    try:
        if committing:
            with _database().transaction() as session:
                diff = _create(form, True)(session)
        else:
            diff = preview(_database(), _create(form, False))
        error = None
    except _Invalid as exc:
        error = str(exc)
        diff = _dry_run_again(lambda: _create(form, False)) if committing else None
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


def _settings() -> Any:
    from flask import current_app

    return current_app.extensions["provisioning.settings"]


def _fallback_reviewer(session: Session) -> User | None:
    """The configured fallback reviewer (PROVISIONING_REVIEW_FALLBACK), if an active user."""
    return directory.person(session, _settings().review_fallback)


def _version(mapping: Mapping) -> str:
    """What the edit form remembers of the mapping it was opened on."""
    return mapping.updated_at.isoformat()


def _expiry(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
    except ValueError:
        raise _Invalid("The expiry date must be YYYY-MM-DD.") from None


def _edit_page(mapping_id: int, status: int = 200, **context: Any) -> Any:
    with _database().reader() as session:
        found = session.execute(
            select(Mapping, Group.display_name, Connector.slug)
            .join(Group, Group.id == Mapping.group_id)
            .join(Connector, Connector.id == Mapping.connector_id)
            .where(Mapping.id == mapping_id)
        ).first()
        if found is None:
            return refusal(404, "No such mapping", f"There is no mapping {mapping_id}.")
        mapping, group, slug = found
        context.setdefault("version", _version(mapping))
        return page(
            "mapping.html",
            status,
            mapping=mapping,
            group=group,
            slug=slug,
            levels=[level.value for level in AccessLevel],
            **{"diff": None, "committed": None, "error": None, "form": {}, **context},
        )


@console.get("/mappings/<int:mapping_id>")
@needs(Role.VIEWER)
def mapping_page(mapping_id: int) -> Any:
    return _edit_page(mapping_id)


@console.post("/mappings/<int:mapping_id>")
@needs(Role.ADMIN)
def change_mapping(mapping_id: int) -> Any:
    """Change or remove a mapping: a dry run first, then the same change once confirmed,
    refused if someone changed the mapping since the form was opened."""
    form = request.form
    removing = form.get("action") == "delete"
    committing = form.get("confirm") == "yes"

    def making(committing: bool) -> Callable[[Session], dict[str, Any]]:
        def change(session: Session) -> dict[str, Any]:
            mapping = session.get(Mapping, mapping_id, with_for_update=True)
            if mapping is None:
                raise _Invalid("The mapping was removed since you opened it.")
            if _version(mapping) != form.get("version"):
                raise _Invalid("The mapping changed since you opened it: reload it and try again.")
            if removing:
                return _shown(
                    session,
                    lambda: mapping_rules.delete_mapping(
                        session, g.person.origin, mapping, settings=_settings()
                    ),
                    committing,
                )
            level = form.get("access_level", "")
            if level not in {lvl.value for lvl in AccessLevel}:
                raise _Invalid("Choose an access level.")
            expires_at = _expiry(form.get("expires_on"))
            return _shown(
                session,
                lambda: mapping_rules.update_mapping(
                    session,
                    g.person.origin,
                    mapping,
                    settings=_settings(),
                    access_level=AccessLevel(level),
                    expires_at=expires_at,
                    **_asked(form, committing),
                ),
                committing,
            )

        return change

    try:
        if committing:
            with _database().transaction() as session:
                diff = making(True)(session)
        else:
            diff = preview(_database(), making(False))
    except _Invalid as exc:
        stale = "since you opened" in str(exc)
        return _edit_page(
            mapping_id,
            409 if stale else 422,
            error=str(exc),
            form=form,
            version=form.get("version", ""),
            removing=removing,
            diff=_dry_run_again(lambda: making(False)) if committing and not stale else None,
        )
    if committing and removing:
        return redirect(url_for("console.mappings"), 303)
    return _edit_page(
        mapping_id,
        diff=diff,
        committed=committing,
        form=form,
        removing=removing,
        **({} if committing else {"version": form.get("version", "")}),
    )


# -- findings -------------------------------------------------------------------------


@console.get("/findings")
@needs(Role.VIEWER)
def findings() -> Any:
    kind = request.args.get("kind") or ""
    state = request.args.get("state") or FindingState.OPEN.value
    statement = select(Finding).order_by(Finding.first_seen.desc(), Finding.id.desc()).limit(200)
    if kind in {k.value for k in FindingKind}:
        statement = statement.where(Finding.kind == kind)
    if state in {s_.value for s_ in FindingState}:
        statement = statement.where(Finding.state == state)
    with _database().reader() as session:
        rows = session.scalars(statement).all()
    return page(
        "findings.html",
        rows=rows,
        kind=kind,
        state=state,
        kinds=[k.value for k in FindingKind],
        states=[s_.value for s_ in FindingState],
    )


@console.post("/findings/<int:finding_id>")
@needs(Role.ADMIN)
def decide_finding(finding_id: int) -> Any:
    state = request.form.get("state")
    reason = (request.form.get("reason") or "").strip()
    if state not in (FindingState.RESOLVED.value, FindingState.SUPPRESSED.value):
        return refusal(422, "Choose resolve or suppress", "Nothing was changed.")
    if not reason:
        return refusal(422, "A reason is needed", "Say why; nothing was changed.")
    with _database().transaction() as session:
        finding = session.get(Finding, finding_id, with_for_update=True)
        if finding is None:
            return refusal(404, "No such finding", f"There is no finding {finding_id}.")
        if finding.state != FindingState.OPEN:
            return refusal(409, "Already decided", f"Finding {finding_id} is {finding.state}.")
        finding_rules.decide(session, g.person.origin, finding, FindingState(state), reason)
    return redirect(url_for("console.findings"), 303)


# -- delivery -------------------------------------------------------------------------


@console.get("/delivery")
@needs(Role.VIEWER)
def delivery() -> Any:
    with _database().reader() as session:
        targets = outbox.health(session)
        dead = session.execute(
            select(OutboxMessage, Target.name)
            .join(Target, Target.id == OutboxMessage.target_id)
            .where(OutboxMessage.state == MessageState.DEAD)
            .order_by(OutboxMessage.id)
            .limit(200)
        ).all()
    return page("delivery.html", targets=targets, dead=dead, now=dt.datetime.now(dt.UTC))


@console.post("/delivery/<int:target_id>/retry")
@needs(Role.ADMIN)
def retry(target_id: int) -> Any:
    with _database().transaction() as session:
        if session.get(Target, target_id) is None:
            return refusal(404, "No such target", f"There is no target {target_id}.")
        outbox.retry_dead(session, g.person.origin, target_id=target_id)
    return redirect(url_for("console.delivery"), 303)


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
    return page("audit.html", events=events, actor=actor, subject=subject, verified=None)


@console.get("/audit/verify")
@needs(Role.VIEWER)
def verify_audit() -> Any:
    """Walk the whole chain, as ``provisioning audit verify`` does."""
    with _database().reader() as session:
        verified = audit_log.verify(session)
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(100)).all()
    return page("audit.html", events=events, actor="", subject="", verified=verified)


@console.get("/audit/export")
@needs(Role.VIEWER)
def export_audit() -> Any:
    """Every event as JSON lines, as ``provisioning audit export`` writes them."""
    database = _database()

    def generate():
        with database.reader() as session:
            for event in audit_log.iter_events(session):
                yield audit_log.line(event)

    response = Response(stream_with_context(generate()), mimetype="application/jsonl")
    response.headers["Content-Disposition"] = 'attachment; filename="audit.jsonl"'
    return response
