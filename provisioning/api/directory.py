"""/api/v1/users and /api/v1/groups: the people and groups the IdP provisioned, and their access."""

from __future__ import annotations

from dataclasses import asdict

from flask import Response
from sqlalchemy import func, select

from provisioning.api import schemas
from provisioning.api.connectors import READ
from provisioning.api.edge import database, found, json_response, listing, page, route
from provisioning.entitlements import access
from provisioning.identity import directory
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
        state=str(user.state),  # type: ignore[arg-type]
    )


@route("GET", "/users", READ, tag=TAG, ok={200: schemas.UserPage})
def list_users(query: schemas.UserQuery) -> Response:
    """Users sorted by userName; ``q`` searches userName, display name and email."""
    statement = select(User)
    if query.q:
        statement = statement.where(directory.matching(query.q))
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
        grants = [asdict(grant) for grant in access.of_user(session, user)]
        return json_response(schemas.UserAccess(user=user_out(user), grants=grants))


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
        statement = statement.where(
            Group.display_name_key.like(directory.pattern(query.q), escape="\\")
        )
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
