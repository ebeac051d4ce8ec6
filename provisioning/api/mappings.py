"""/api/v1/mappings: IdP groups mapped to connector entitlements, with dry runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.api import schemas
from provisioning.api.connectors import READ, WRITE
from provisioning.api.edge import (
    changes,
    check_if_match,
    database,
    etag_of,
    fail,
    found,
    json_response,
    listing,
    origin,
    route,
    settings,
    unprocessable,
)
from provisioning.connectors.models import Connector
from provisioning.entitlements import mappings as domain
from provisioning.entitlements.engine import Diff
from provisioning.entitlements.models import Mapping
from provisioning.entitlements.previews import preview
from provisioning.identity.models import Group

TAG = "mappings"


def mapping_out(session: Session, mapping: Mapping) -> schemas.MappingOut:
    group = session.get(Group, mapping.group_id)
    connector = session.get(Connector, mapping.connector_id)
    return schemas.MappingOut(
        id=mapping.id,
        group_id=mapping.group_id,
        group=group.display_name if group else "",
        connector=connector.slug if connector else "",
        access_level=mapping.access_level,
        actions=mapping.actions,
        policies=mapping.policies,
        expires_at=mapping.expires_at,
        description=mapping.description,
        created_by=mapping.created_by,
        created_at=mapping.created_at,
        updated_at=mapping.updated_at,
    )


def _run(
    dry_run: bool,
    change: Callable[[Session], tuple[Mapping | None, Diff]],
    status: int,
    *,
    creates: bool = False,
) -> Response:
    """Run a mapping change for real, or as a dry run that writes nothing.

    A dry-run creation names its not-yet-existing mapping ``mapping:new`` in
    the reasons, since the id it had inside the rolled-back transaction is not
    the one a commit will get.
    """

    def shaped(session: Session) -> dict[str, Any]:
        try:
            mapping, diff = change(session)
        except domain.SeparationConflict as exc:
            fail(409, "Conflict", str(exc), "separation-of-duties")
        except domain.MappingError as exc:
            unprocessable(str(exc), exc.field)
        out = None if mapping is None or dry_run else mapping_out(session, mapping)
        result = changes(session, diff, dry_run=dry_run)
        if dry_run and creates and mapping is not None:
            own = f"mapping:{mapping.id}"
            for item in (*result["gain"], *result["change"]):
                item.reasons = sorted("mapping:new" if r == own else r for r in item.reasons)
        return {**result, "mapping": out}

    if dry_run:
        result = schemas.MappingResult(**preview(database(), shaped))
        return json_response(result, 200)
    with database().transaction() as session:
        result = schemas.MappingResult(**shaped(session))
    etag = etag_of(result.mapping) if result.mapping else None
    return json_response(result, status, etag=etag)


@route("GET", "/mappings", READ, tag=TAG, ok={200: schemas.MappingPage})
def list_mappings(query: schemas.MappingQuery) -> Response:
    """Mappings by id, filtered by group or connector."""
    statement = select(Mapping)
    with database().reader() as session:
        if query.group_id is not None:
            statement = statement.where(Mapping.group_id == query.group_id)
        if query.connector is not None:
            connector_id = session.scalar(
                select(Connector.id).where(Connector.slug == query.connector)
            )
            statement = statement.where(Mapping.connector_id == connector_id)
        return listing(
            session,
            statement,
            [Mapping.id],
            query,
            schemas.MappingPage,
            lambda mapping: mapping_out(session, mapping),
        )


@route(
    "POST",
    "/mappings",
    WRITE,
    tag=TAG,
    ok={201: schemas.MappingResult, 200: schemas.MappingResult},
    problems=[404],
    summary="Map a group to a connector (?dry_run=true: who would gain what, nothing written)",
)
def create_mapping(query: schemas.DryRun, body: schemas.MappingIn) -> Response:
    def change(session: Session) -> tuple[Mapping, Diff]:
        group = session.get(Group, body.group_id)
        if group is None:
            unprocessable(f"no group {body.group_id}", "group_id")
        connector = session.scalar(select(Connector).where(Connector.slug == body.connector))
        if connector is None:
            unprocessable(f"no connector {body.connector}", "connector")
        return domain.create_mapping(
            session,
            origin(),
            group,
            connector,
            body.access_level,
            actions=body.actions,
            policies=body.policies,
            expires_at=body.expires_at,
            description=body.description,
        )

    return _run(query.dry_run, change, 201, creates=True)


@route(
    "GET", "/mappings/<int:mapping_id>", READ, tag=TAG, ok={200: schemas.MappingOut}, problems=[404]
)
def get_mapping(path: schemas.MappingPath) -> Response:
    with database().reader() as session:
        out = mapping_out(session, found(session, Mapping, path.mapping_id, "mapping"))
    return json_response(out, etag=etag_of(out))


@route(
    "PATCH",
    "/mappings/<int:mapping_id>",
    WRITE,
    tag=TAG,
    ok={200: schemas.MappingResult},
    problems=[404, 412],
    summary="Change a mapping (?dry_run=true: who would gain or lose what, nothing written)",
)
def update_mapping(
    path: schemas.MappingPath, query: schemas.DryRun, body: schemas.MappingPatch
) -> Response:
    def change(session: Session) -> tuple[Mapping, Diff]:
        mapping = found(session, Mapping, path.mapping_id, "mapping", lock=True)
        check_if_match(etag_of(mapping_out(session, mapping)))
        diff = domain.update_mapping(
            session, origin(), mapping, settings=settings(), **body.model_dump(exclude_unset=True)
        )
        return mapping, diff

    return _run(query.dry_run, change, 200)


@route(
    "DELETE",
    "/mappings/<int:mapping_id>",
    WRITE,
    tag=TAG,
    ok={200: schemas.MappingResult},
    problems=[404, 412],
    summary="Remove a mapping (?dry_run=true: who would lose what, nothing written)",
)
def delete_mapping(path: schemas.MappingPath, query: schemas.DryRun) -> Response:
    def change(session: Session) -> tuple[None, Diff]:
        mapping = found(session, Mapping, path.mapping_id, "mapping", lock=True)
        check_if_match(etag_of(mapping_out(session, mapping)))
        return None, domain.delete_mapping(session, origin(), mapping, settings=settings())

    return _run(query.dry_run, change, 200)
