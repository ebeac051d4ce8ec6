"""/api/v1/mappings: IdP groups mapped to connector entitlements, with dry runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning import text
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
from provisioning.audit.log import Origin
from provisioning.connectors.models import Connector
from provisioning.database import Database
from provisioning.entitlements import mappings as domain
from provisioning.entitlements import separation
from provisioning.entitlements.engine import Diff
from provisioning.entitlements.models import Mapping
from provisioning.entitlements.previews import preview
from provisioning.identity.models import Group
from provisioning.settings import Settings

if TYPE_CHECKING:
    from provisioning.okta.client import OktaClient

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


SHOWN_VIOLATIONS = 100


def violations_out(violations: list[separation.Violation]) -> list[schemas.SeparationViolationOut]:
    """The first :data:`SHOWN_VIOLATIONS` violations as the API shows them."""
    return [
        schemas.SeparationViolationOut(
            user_id=v.user_id,
            user_name=v.user_name,
            rule_id=v.rule_id,
            rule=v.rule,
            held=list(v.held),
            new=list(v.new),
        )
        for v in violations[:SHOWN_VIOLATIONS]
    ]


def confirmation(body: schemas.ConfirmViolations, dry_run: bool) -> domain.Confirmation | None:
    """The body's confirmation of violations; a dry run goes on as if confirmed
    (:data:`domain.DRY_RUN`)."""
    if body.confirm_violations:
        return domain.Confirmation.of(body.reason)
    return domain.DRY_RUN if dry_run else None


def outcome(
    database: Database,
    dry_run: bool,
    change: Callable[[Session], tuple[Mapping | None, Diff]],
    *,
    creates: bool = False,
    extra: dict[str, Any] | None = None,
    confirmed: bool = False,
) -> schemas.MappingResult:
    """Run a mapping change for real, or as a dry run that writes nothing; what it did.

    A dry-run creation names its not-yet-existing mapping ``mapping:new`` in
    the reasons, since the id it had inside the rolled-back transaction is not
    the one a commit will get. ``extra``: more fields of the result, which
    ``change`` may fill. :class:`~provisioning.entitlements.mappings.MappingError`
    when the change cannot be made (nothing written). ``confirmed``: the body confirmed
    the separation-of-duties violations the change begins, which the result lists.
    """

    def shaped(session: Session) -> dict[str, Any]:
        mapping, diff = change(session)
        out = None if mapping is None or dry_run else mapping_out(session, mapping)
        result = changes(session, diff, dry_run=dry_run)
        if dry_run and creates and mapping is not None:
            own = f"mapping:{mapping.id}"
            for item in (*result["gain"], *result["change"]):
                item.reasons = sorted("mapping:new" if r == own else r for r in item.reasons)
        violations = {
            "violations": violations_out(diff.violations),
            "violations_total": len(diff.violations),
            "confirmation_needed": bool(diff.violations) and not confirmed,
        }
        return {**result, "mapping": out, **violations, **(extra or {})}

    if dry_run:
        return schemas.MappingResult(**preview(database, shaped))
    with database.transaction() as session:
        return schemas.MappingResult(**shaped(session))


def _run(
    dry_run: bool,
    change: Callable[[Session], tuple[Mapping | None, Diff]],
    status: int,
    *,
    creates: bool = False,
    confirmed: bool = False,
) -> Response:
    """:func:`outcome` as an answer: 200 for a dry run, else ``status``; 422 if refused."""
    try:
        result = outcome(database(), dry_run, change, creates=creates, confirmed=confirmed)
    except domain.MappingError as exc:
        _refused(exc)
    return _answer(result, status)


def _refused(exc: domain.MappingError) -> None:
    """A refused mapping change as a problem: 409 for a separation-of-duties rule (with the
    violations a change would begin, the first :data:`SHOWN_VIOLATIONS` and their count),
    else 422."""
    if isinstance(exc, domain.SeparationViolations):
        shown = [v.model_dump(mode="json") for v in violations_out(exc.violations)]
        fail(
            409,
            "Conflict",
            str(exc),
            "separation-of-duties",
            violations=shown,
            violations_total=len(exc.violations),
        )
    if isinstance(exc, domain.SeparationConflict):
        fail(409, "Conflict", str(exc), "separation-of-duties")
    unprocessable(str(exc), exc.field)


def _answer(result: schemas.MappingResult, status: int) -> Response:
    if result.dry_run:
        return json_response(result, 200)
    etag = etag_of(result.mapping) if result.mapping else None
    return json_response(result, status, etag=etag)


def _connector(session: Session, slug: str) -> Connector:
    connector = session.scalar(select(Connector).where(Connector.slug == slug))
    if connector is None:
        raise domain.MappingError(f"no connector {slug}", "connector")
    return connector


def map_okta_group(
    database: Database,
    client: OktaClient,
    body: schemas.MappingIn,
    origin: Origin,
    *,
    dry_run: bool,
    settings: Settings,
) -> schemas.MappingResult:
    """Map the Okta group ``body.okta_group`` names (:mod:`provisioning.okta.groups`): the
    admin API's and the command's one way. Raises what it refuses with, before anything is
    written: MappingError, GroupLookupError, OktaError."""
    from provisioning.okta import groups as okta_groups  # the okta SDK: loaded when used

    assert body.okta_group is not None
    with database.reader() as session:
        _connector(session, body.connector)  # before asking Okta anything
    confirmed = confirmation(body, dry_run)  # before asking Okta anything
    fetched = okta_groups.fetch(client, body.okta_group)
    extra: dict[str, Any] = {}

    def change(session: Session) -> tuple[Mapping, Diff]:
        connector = _connector(session, body.connector)
        try:
            mapped = okta_groups.map_group(
                session,
                origin,
                fetched,
                connector,
                body.access_level,
                actions=body.actions,
                policies=body.policies,
                expires_at=body.expires_at,
                description=body.description,
                settings=settings,
                confirmation=confirmed,
            )
        except text.TextError as exc:
            raise domain.MappingError(
                f"Okta group {fetched.okta_id}: {exc}", "okta_group"
            ) from None
        extra["okta_group"] = schemas.OktaGroupMapped(
            id=fetched.okta_id,
            name=fetched.name,
            members=mapped.members,
            adopted=mapped.adopted,
            people_added=mapped.people_added,
        )
        return mapped.mapping, mapped.diff

    return outcome(
        database, dry_run, change, creates=True, extra=extra, confirmed=body.confirm_violations
    )


def _okta_mapping(dry_run: bool, body: schemas.MappingIn) -> Response:
    """POST /mappings with ``okta_group``: the problems of an Okta lookup, or the result."""
    from provisioning.okta import client as okta_client  # the okta SDK: loaded when used
    from provisioning.okta import groups as okta_groups

    try:
        client = okta_client.from_settings(settings())
    except okta_client.OktaError as exc:
        fail(409, "Conflict", f"no Okta org to look the group up in: {exc}", "okta-not-configured")
    try:
        result = map_okta_group(
            database(), client, body, origin(), dry_run=dry_run, settings=settings()
        )
    except domain.MappingError as exc:
        _refused(exc)
    except okta_groups.GroupLookupError as exc:
        kind = "okta-group-ambiguous" if exc.status == 409 else "okta-group-unknown"
        title = "Conflict" if exc.status == 409 else "Not Found"
        fail(exc.status, title, str(exc), kind, candidates=exc.candidates)
    except okta_client.OktaError as exc:
        fail(502, "Bad Gateway", f"Okta: {exc}; nothing was written", "okta-unavailable")
    finally:
        client.close()
    return _answer(result, 201)


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
    problems=[404, 409, 502],
    summary=(
        "Map a group to a connector, a group held here or an Okta group by id or name "
        "(?dry_run=true: who would gain what, who would break a separation-of-duties rule; "
        "nothing written)"
    ),
)
def create_mapping(query: schemas.DryRun, body: schemas.MappingIn) -> Response:
    if body.okta_group is not None:
        return _okta_mapping(query.dry_run, body)

    try:
        confirmed = confirmation(body, query.dry_run)
    except domain.MappingError as exc:
        _refused(exc)

    def change(session: Session) -> tuple[Mapping, Diff]:
        group = session.get(Group, body.group_id)
        if group is None:
            unprocessable(f"no group {body.group_id}", "group_id")
        return domain.create_mapping(
            session,
            origin(),
            group,
            _connector(session, body.connector),
            body.access_level,
            actions=body.actions,
            policies=body.policies,
            expires_at=body.expires_at,
            description=body.description,
            confirmation=confirmed,
        )

    return _run(query.dry_run, change, 201, creates=True, confirmed=body.confirm_violations)


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
    problems=[404, 409, 412],
    summary=(
        "Change a mapping (?dry_run=true: who would gain or lose what, who would break a "
        "separation-of-duties rule; nothing written)"
    ),
)
def update_mapping(
    path: schemas.MappingPath, query: schemas.DryRun, body: schemas.MappingPatch
) -> Response:
    try:
        confirmed = confirmation(body, query.dry_run)
    except domain.MappingError as exc:
        _refused(exc)
    fields = body.model_dump(exclude_unset=True, exclude={"confirm_violations", "reason"})

    def change(session: Session) -> tuple[Mapping, Diff]:
        mapping = found(session, Mapping, path.mapping_id, "mapping", lock=True)
        check_if_match(etag_of(mapping_out(session, mapping)))
        diff = domain.update_mapping(
            session, origin(), mapping, settings=settings(), confirmation=confirmed, **fields
        )
        return mapping, diff

    return _run(query.dry_run, change, 200, confirmed=body.confirm_violations)


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
