"""/api/v1/separation-rules: rules of incompatible access and the exemptions from them."""

from __future__ import annotations

from flask import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.api import schemas
from provisioning.api.connectors import READ, WRITE
from provisioning.api.edge import (
    database,
    found,
    json_response,
    origin,
    route,
    unprocessable,
)
from provisioning.connectors.models import Action, Connector
from provisioning.database import utcnow
from provisioning.entitlements import separation
from provisioning.entitlements.models import SeparationRule
from provisioning.identity.models import User

TAG = "separation of duties"


def _parts(session: Session, names: list[str], field: str) -> list[Connector | Action]:
    """A side as given: connector slugs, or ``slug:action`` for one action of one."""
    wanted = [(name.partition(":")[0], name.partition(":")[2] or None) for name in names]
    by_slug = {
        c.slug: c
        for c in session.scalars(
            select(Connector).where(Connector.slug.in_({slug for slug, _ in wanted}))
        )
    }
    actions = {
        (a.connector_id, a.name): a
        for a in session.scalars(
            select(Action).where(
                Action.connector_id.in_([c.id for c in by_slug.values()]),
                Action.name.in_({action for _, action in wanted if action}),
            )
        )
    }
    out: list[Connector | Action] = []
    missing = []
    for name, (slug, action) in zip(names, wanted, strict=True):
        connector = by_slug.get(slug)
        entry = (
            connector
            if connector is None or action is None
            else actions.get((connector.id, action))
        )
        if entry is None or (action is None and name.endswith(":")):
            missing.append(name)
        else:
            out.append(entry)
    if missing:
        unprocessable(f"no connector(s) or action(s) {', '.join(sorted(missing))}", field)
    return out


def _out(session: Session, rule: SeparationRule) -> schemas.SeparationRuleOut:
    these, those = separation.parts(rule.these), separation.parts(rule.those)
    slugs = dict(
        session.execute(
            select(Connector.id, Connector.slug).where(
                Connector.id.in_({p.connector_id for p in these + those})
            )
        ).all()
    )

    def named(side: list[separation.Part]) -> list[str]:
        return sorted(
            slugs[p.connector_id] + (f":{p.action}" if p.action else "")
            for p in side
            if p.connector_id in slugs
        )

    return schemas.SeparationRuleOut(
        id=rule.id,
        name=rule.name,
        these=named(these),
        those=named(those),
        owner=rule.owner,
        reason=rule.reason,
        created_by=rule.created_by,
        created_at=rule.created_at,
    )


@route("GET", "/separation-rules", READ, tag=TAG, ok={200: schemas.SeparationRulePage})
def list_separation_rules() -> Response:
    with database().reader() as session:
        rules = session.scalars(select(SeparationRule).order_by(SeparationRule.id)).all()
        items = [_out(session, rule) for rule in rules]
    return json_response(schemas.SeparationRulePage(items=items))


@route(
    "POST",
    "/separation-rules",
    WRITE,
    tag=TAG,
    ok={201: schemas.SeparationRuleOut},
    summary="Nobody may hold any of these connectors or actions with any of those",
)
def create_separation_rule(body: schemas.SeparationRuleIn) -> Response:
    with database().transaction() as session:
        these = _parts(session, body.these, "these")
        those = _parts(session, body.those, "those")
        try:
            rule = separation.create_rule(
                session,
                origin(),
                name=body.name,
                these=these,
                those=those,
                owner=body.owner,
                reason=body.reason,
            )
        except separation.SeparationError as exc:
            unprocessable(str(exc), exc.field)
        result = _out(session, rule)
    return json_response(result, 201)


@route(
    "DELETE",
    "/separation-rules/<int:rule_id>",
    WRITE,
    tag=TAG,
    ok={204: None},
    problems=[404],
)
def delete_separation_rule(path: schemas.SeparationRulePath) -> Response:
    with database().transaction() as session:
        rule = found(session, SeparationRule, path.rule_id, "separation rule")
        separation.delete_rule(session, origin(), rule)
    return Response(status=204)


@route(
    "POST",
    "/separation-rules/<int:rule_id>/exemptions",
    WRITE,
    tag=TAG,
    ok={201: schemas.SeparationExemptionOut},
    problems=[404],
    summary="Let one person hold what the rule forbids, until an expiry (audited)",
)
def create_separation_exemption(
    path: schemas.SeparationRulePath, body: schemas.SeparationExemptionIn
) -> Response:
    with database().transaction() as session:
        rule = found(session, SeparationRule, path.rule_id, "separation rule")
        if session.get(User, body.user_id) is None:
            unprocessable(f"no user {body.user_id}", "user_id")
        if body.expires_at <= utcnow():
            unprocessable("expires_at must be in the future", "expires_at")
        try:
            exemption = separation.exempt(
                session,
                origin(),
                rule,
                body.user_id,
                justification=body.justification,
                expires_at=body.expires_at,
            )
        except separation.SeparationError as exc:
            unprocessable(str(exc), exc.field)
        result = schemas.SeparationExemptionOut(
            id=exemption.id,
            rule_id=rule.id,
            user_id=exemption.user_id,
            justification=exemption.justification,
            approved_by=exemption.approved_by,
            expires_at=exemption.expires_at,
            created_at=exemption.created_at,
        )
    return json_response(result, 201)
