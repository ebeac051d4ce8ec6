"""/api/v1/users and /api/v1/groups: the people and groups the IdP provisioned, and their access."""

from __future__ import annotations

from flask import Response
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from provisioning import text
from provisioning.api import schemas
from provisioning.api.connectors import READ
from provisioning.api.edge import database, found, json_response, listing, page, route
from provisioning.connectors.models import Action, Connector, Interface
from provisioning.entitlements import decisions
from provisioning.entitlements.models import Grant, ManualException, Mapping
from provisioning.entitlements.policy import ActionFacts, effective_policy
from provisioning.identity.models import Group, Membership, User

TAG = "directory"


def user_out(user: User) -> schemas.UserOut:
    return schemas.UserOut(
        id=user.id,
        user_name=user.user_name,
        external_id=user.external_id,
        display_name=user.display_name,
        email=user.email,
        department=user.department,
        employee_number=user.employee_number,
        active=user.active,
        state=str(decisions.user_state(user)),  # type: ignore[arg-type]
    )


def _like(value: str) -> str:
    """A LIKE pattern finding ``value`` in a folded key (:func:`provisioning.text.fold`)."""
    escaped = text.fold(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@route("GET", "/users", READ, tag=TAG, ok={200: schemas.UserPage})
def list_users(query: schemas.UserQuery) -> Response:
    """Users sorted by userName; ``q`` searches userName, display name and email."""
    statement = select(User)
    if query.q:
        pattern = _like(query.q)
        statement = statement.where(
            or_(
                User.user_name_key.like(pattern, escape="\\"),
                User.display_name_key.like(pattern, escape="\\"),
                User.email_key.like(pattern, escape="\\"),
            )
        )
    if query.active is not None:
        statement = statement.where(User.active.is_(query.active))
    if query.department is not None:
        statement = statement.where(User.department == query.department)
    with database().reader() as session:
        return listing(
            session, statement, [User.user_name_key, User.id], query, schemas.UserPage, user_out
        )


@route("GET", "/users/<user_id>", READ, tag=TAG, ok={200: schemas.UserOut}, problems=[404])
def get_user(path: schemas.UserPath) -> Response:
    with database().reader() as session:
        return json_response(user_out(found(session, User, path.user_id, "user")))


def _sources(session: Session, entitlements: list) -> list[schemas.Source]:
    out = []
    for e in sorted(entitlements, key=lambda e: e.source):
        via, ref = e.source.split(":")
        if via == "mapping":
            row = session.execute(
                select(Group.display_name, Mapping.expires_at)
                .join(Mapping, Mapping.group_id == Group.id)
                .where(Mapping.id == int(ref))
            ).one()
            out.append(schemas.Source(source=e.source, group=row[0], expires_at=row[1]))
        else:
            exception = session.get(ManualException, int(ref))
            assert exception is not None
            out.append(
                schemas.Source(
                    source=e.source,
                    expires_at=exception.expires_at,
                    justification=exception.justification,
                )
            )
    return out


@route(
    "GET",
    "/users/<user_id>/access",
    READ,
    tag=TAG,
    ok={200: schemas.UserAccess},
    problems=[404],
    summary="Every live grant, what justifies it, and each action's effective policy",
)
def user_access(path: schemas.UserPath) -> Response:
    with database().reader() as session:
        user = found(session, User, path.user_id, "user")
        state = decisions.user_state(user)
        grants = session.execute(
            select(Grant, Connector)
            .join(Connector, Connector.id == Grant.connector_id)
            .where(Grant.user_id == user.id, Grant.revoked_at.is_(None))
            .order_by(Connector.slug)
        ).all()
        shaped = []
        for grant, connector in grants:
            entitlements = decisions.entitlements(session, user.id, connector.id)
            facts = decisions.connector_facts(connector)
            interfaces = sorted(Interface(i) for i in connector.interfaces)
            actions = []
            for action in session.scalars(
                select(Action).where(Action.connector_id == connector.id).order_by(Action.name)
            ):
                action_facts = ActionFacts(action.name, action.kind, action.org_policy)
                effective = {
                    str(i): effective_policy(
                        state, facts, action.name, action_facts, i, entitlements
                    ).decision
                    for i in interfaces
                }
                actions.append(
                    schemas.ActionAccess(
                        name=action.name,
                        kind=action.kind,
                        org_policy=action.org_policy,
                        effective=effective,
                    )
                )
            shaped.append(
                schemas.GrantAccess(
                    grant_id=grant.id,
                    connector=connector.slug,
                    access_level=grant.access_level,
                    granted_at=grant.granted_at,
                    last_used_at=grant.last_used_at,
                    sources=_sources(session, entitlements),
                    actions=actions,
                )
            )
        return json_response(schemas.UserAccess(user=user_out(user), grants=shaped))


# -- groups ---------------------------------------------------------------------------


@route("GET", "/groups", READ, tag=TAG, ok={200: schemas.GroupPage})
def list_groups(query: schemas.GroupQuery) -> Response:
    """Groups sorted by display name, with their present member counts."""
    members = (
        select(func.count())
        .where(Membership.group_id == Group.id, Membership.present.is_(True))
        .scalar_subquery()
    )
    statement = select(Group, members.label("members"))
    if query.q:
        statement = statement.where(Group.display_name_key.like(_like(query.q), escape="\\"))
    with database().reader() as session:
        rows, cursor = page(
            session,
            statement,
            [Group.display_name, Group.id],
            cursor=query.cursor,
            limit=query.limit,
        )
        items = [
            schemas.GroupOut(
                id=group.id,
                display_name=group.display_name,
                external_id=group.external_id,
                members=count,
            )
            for group, count in rows
        ]
    return json_response(schemas.GroupPage(items=items, next_cursor=cursor))


@route(
    "GET",
    "/groups/<group_id>/members",
    READ,
    tag=TAG,
    ok={200: schemas.UserPage},
    problems=[404],
)
def group_members(path: schemas.GroupPath, query: schemas.PageQuery) -> Response:
    """The group's present members, sorted by userName."""
    with database().reader() as session:
        found(session, Group, path.group_id, "group")
        statement = (
            select(User)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.group_id == path.group_id, Membership.present.is_(True))
        )
        return listing(
            session, statement, [User.user_name_key, User.id], query, schemas.UserPage, user_out
        )
