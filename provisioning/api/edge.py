"""The /api/v1 blueprint's plumbing: authentication per route, problems, paging, ETags."""

from __future__ import annotations

import base64
import binascii
import hashlib
import inspect
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from authlib.oauth2 import OAuth2Error
from flask import Response, abort, current_app, g, request
from flask_openapi3 import APIBlueprint, OpenAPI, Tag
from pydantic import BaseModel, ValidationError
from sqlalchemy import BigInteger, Integer, Select, Uuid, select, tuple_
from sqlalchemy.orm import Session

from provisioning import text
from provisioning.api import schemas
from provisioning.api.auth import Caller, caller_of, www_authenticate
from provisioning.audit.log import Origin, Source
from provisioning.connectors.models import Connector
from provisioning.database import Database, chunked
from provisioning.entitlements import engine
from provisioning.identity import directory
from provisioning.identity.models import User
from provisioning.settings import Settings
from provisioning.tokens import credentials
from provisioning.web import bodies
from provisioning.web.problems import TYPE_PREFIX, problem

PREFIX = "/api/v1"
PROBLEM_TYPE = TYPE_PREFIX

api = APIBlueprint("api", __name__, url_prefix=PREFIX)
# endpoint -> scope it needs; filled by :func:`route`.
SCOPES: dict[str, str] = {}
# endpoints whose operation takes a JSON body; filled by :func:`route`.
BODIES: set[str] = set()
# operation ids of operations that read their bodies themselves (AuthZEN: a 400 in its own
# terms), which never answer flask-openapi3's validation error.
SELF_VALIDATED: set[str] = set()


def problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
            }
        },
    }


PROBLEMS = {
    400: "bad request: a body that is not JSON (or nested too deep), a forged cursor",
    401: "no credential, or a bad one",
    403: "the credential lacks the scope",
    404: "not found",
    409: "conflicts with the current state",
    412: "If-Match does not match the current ETag",
    413: "request body too large",
    415: "the body is not sent as JSON",
    422: "invalid request: each invalid field is named",
    502: "a server the service had to ask (Okta, a connector's MCP server) failed or refused",
}


def route(
    method: str,
    rule: str,
    scope: str,
    *,
    tag: str,
    ok: dict[int, Any],
    problems: Sequence[int] = (),
    summary: str | None = None,
) -> Callable:
    """Register an operation needing ``scope``, documenting its answers and problems."""
    responses: dict[int, Any] = dict(ok)
    for status in (400, 401, 403, 413, 422, *problems):
        responses[status] = problem_response(PROBLEMS[status])

    def decorator(func: Callable) -> Callable:
        endpoint = f"{api.name}.{func.__name__}"
        SCOPES[endpoint] = scope
        if "body" in inspect.signature(func).parameters:
            BODIES.add(endpoint)
            responses[415] = problem_response(PROBLEMS[415])
        register = getattr(api, method.lower())
        return register(
            rule,
            tags=[Tag(name=tag)],
            responses=responses,
            security=[{"bearer": [scope]}],
            summary=summary,
            description=f"Needs scope `{scope}`.",
        )(func)

    return decorator


@api.before_request
def _authenticate() -> Response | None:
    """Authenticate with the route's scope; then read the body, if the route takes one.

    The body's size was checked before (:mod:`provisioning.web.bodies`); its JSON is read
    only for an authenticated caller, so a request without a credential is 401 whatever
    it carries.
    """
    endpoint = request.endpoint or ""
    scope = SCOPES.get(endpoint)
    if scope is None:
        return None
    refused = authenticate(scope)
    if refused is not None:
        return refused
    if endpoint in BODIES:
        bodies.document()
    return None


def authenticate(scope: str) -> Response | None:
    """Authenticate the request's bearer token for ``scope`` (the caller is then
    :func:`caller`); the 401 or 403 problem answering it if it fails."""
    protect = current_app.extensions["provisioning.api.protector"]
    scheme, _, credential = (request.headers.get("Authorization") or "").partition(" ")
    credential = credential.strip()
    try:
        if scheme.lower() == "bearer" and credential.startswith(credentials.PREFIX):
            token = protect.get_token_validator("bearer").static_token(credential, [scope])
        else:
            token = protect.acquire_token([scope])
    except OAuth2Error as error:
        status = 403 if error.error == "insufficient_scope" else 401
        if status == 403:
            detail = f"this operation needs the scope {scope}, which the token does not carry"
        else:
            detail = error.description or "send a bearer token in the Authorization header"
        response = problem(
            status,
            "Forbidden" if status == 403 else "Unauthorized",
            detail,
            type=PROBLEM_TYPE + ("insufficient-scope" if status == 403 else "unauthenticated"),
        )
        response.headers["WWW-Authenticate"] = www_authenticate(error, scope)
        return response
    g.caller = caller_of(token)
    return None


def caller() -> Caller:
    return g.caller


def speaks_for(session: Session) -> User | None:
    """The active person of the directory the caller speaks for: a JWT's subject (by our
    id, Okta id, userName or email), or the user a static token is bound to; else None."""
    who = caller()
    if who.kind == "token":
        return credentials.person_of(session, who.name)
    return directory.person(session, who.name)


def person(session: Session) -> User:
    """:func:`speaks_for`, or 403: only a person asks and decides."""
    found = speaks_for(session)
    if found is None:
        fail(
            403,
            "Forbidden",
            "this credential speaks for no active person of the directory: a person asks "
            "and decides (a JWT of theirs, or a static token bound to them)",
            "no-person",
        )
    return found


def origin(source: Source = Source.ADMIN) -> Origin:
    return Origin(actor=caller().name, source=source)


def database() -> Database:
    return current_app.extensions["provisioning.database"]


def settings() -> Settings:
    """The service's settings, handed to the domain functions that take them."""
    return current_app.extensions["provisioning.settings"]


def fail(status: int, title: str, detail: str, kind: str, **extra: Any) -> None:
    """Stop with a problem+json answer."""
    abort(problem(status, title, detail, type=PROBLEM_TYPE + kind, **extra))


def not_found(what: str) -> None:
    fail(404, "Not Found", f"no {what}", "not-found")


def found(session: Session, model: Any, ident: Any, what: str, *, lock: bool = False) -> Any:
    """The row of ``model`` with primary key ``ident``, or stop with 404 naming ``what``."""
    row = session.get(model, ident, with_for_update=lock or None)
    if row is None:
        not_found(f"{what} {ident}")
    return row


def unprocessable(detail: str, field: str | None = None) -> None:
    errors = [{"field": field, "message": detail}] if field else None
    extra = {"errors": errors} if errors else {}
    fail(422, "Unprocessable Content", detail, "invalid-request", **extra)


def validation_problem(error: ValidationError) -> Response:
    """flask-openapi3's validation error callback: problem+json naming each invalid field."""
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in error.errors(include_url=False)
    ]
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return problem(
        422,
        "Unprocessable Content",
        f"invalid field(s): {fields}",
        type=PROBLEM_TYPE + "invalid-request",
        errors=errors,
    )


def json_response(model: BaseModel, status: int = 200, etag: str | None = None) -> Response:
    response = Response(model.model_dump_json(), status=status, mimetype="application/json")
    if etag:
        response.headers["ETag"] = etag
    return response


# -- ETags ----------------------------------------------------------------------------


def etag_of(model: BaseModel) -> str:
    return '"' + hashlib.sha256(model.model_dump_json().encode()).hexdigest()[:32] + '"'


def check_if_match(current: str) -> None:
    """Refuse with 412 when If-Match names another version (a lost update)."""
    wanted = request.headers.get("If-Match")
    if wanted is None:
        return
    tags = {t.strip().removeprefix("W/") for t in wanted.split(",")}
    if "*" in tags or current in tags:
        return
    fail(
        412,
        "Precondition Failed",
        "the resource changed since you read it: fetch it again",
        "precondition-failed",
    )


# -- cursor paging -------------------------------------------------------------------


def encode_cursor(values: Iterable[Any]) -> str:
    raw = json.dumps([str(v) if not isinstance(v, int) else v for v in values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _forged(why: str) -> None:
    fail(400, "Bad Request", f"cursor is not one this API gave out: {why}", "invalid-cursor")


def _key_value(key: Any, value: Any) -> Any:
    """``value`` read back as a value of the sort key ``key``; 400 unless it could be one:
    an integer within the column's range, an id, or text the column can hold."""
    column_type = key.type
    if isinstance(column_type, Integer):  # BigInteger too
        bound = schemas.INT64 if isinstance(column_type, BigInteger) else schemas.INT32
        if type(value) is not int or not -bound - 1 <= value <= bound:
            _forged(f"{key.key} is an integer between {-bound - 1} and {bound}")
        return value
    if not isinstance(value, str):
        _forged(f"{key.key} is text")
    if isinstance(column_type, Uuid):
        try:
            return uuid.UUID(value)
        except ValueError:
            _forged(f"{key.key} is an id")
    length = getattr(column_type, "length", None) or float("inf")
    if len(value) > length or text.problem(value) is not None:
        _forged(f"{key.key} is text the column holds (its length, no control character)")
    return value


def decode_cursor(cursor: str, keys: Sequence[Any]) -> list[Any]:
    """The sort key values a cursor holds, each checked against its column (400 if not)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        values = None
    if not isinstance(values, list) or len(values) != len(keys):
        _forged(f"it holds {len(keys)} value(s) in a JSON list, in base64")
    return [_key_value(key, value) for key, value in zip(keys, values, strict=True)]


def page(
    session: Session,
    query: Select,
    keys: Sequence[Any],
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[Any], str | None]:
    """One page of ``query`` sorted by ``keys`` (columns, unique together), after ``cursor``.

    The cursor holds the last row's key values, read back strictly as values of each
    key's column (:func:`decode_cursor`); rows are those of a query whose first entity
    owns the keys.
    """
    if cursor:
        values = decode_cursor(cursor, keys)
        if len(keys) == 1:
            query = query.where(keys[0] > values[0])
        else:
            query = query.where(tuple_(*keys) > tuple_(*values))
    rows = session.execute(query.order_by(*keys).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        next_cursor = encode_cursor([getattr(rows[-1][0], key.key) for key in keys])
    return rows, next_cursor


def listing(
    session: Session,
    statement: Select,
    keys: Sequence[Any],
    query: Any,
    model: type[BaseModel],
    out: Callable[[Any], Any],
) -> Response:
    """The answer of a list operation: one :func:`page` of ``statement`` after
    ``query.cursor`` (``query.limit`` rows), each entity shaped by ``out``, as ``model``."""
    rows, cursor = page(session, statement, keys, cursor=query.cursor, limit=query.limit)
    return json_response(model(items=[out(row[0]) for row in rows], next_cursor=cursor))


# -- grant changes ---------------------------------------------------------------------


def changes(session: Session, diff: engine.Diff, *, dry_run: bool) -> dict[str, Any]:
    """The diff as gain / lose / change lists with user names and connector slugs."""
    all_changes = [*diff.created, *diff.revoked, *diff.updated]
    user_ids = {c.user_id for c in all_changes}
    names: dict[Any, str] = {}
    ids = list(user_ids)
    for chunk in chunked(ids):
        rows = session.execute(select(User.id, User.user_name).where(User.id.in_(chunk)))
        names.update((id_, name) for id_, name in rows)
    slugs = dict(session.execute(select(Connector.id, Connector.slug)).all())

    def shape(c: engine.GrantChange) -> schemas.GrantChange:
        return schemas.GrantChange(
            user_id=c.user_id,
            user_name=names.get(c.user_id, ""),
            connector=slugs.get(c.connector_id, ""),
            access_level=c.access_level,
            previous_level=c.previous_level,
            reasons=list(c.reasons),
        )

    def ordered(items: list[engine.GrantChange]) -> list[schemas.GrantChange]:
        shaped = [shape(c) for c in items]
        return sorted(shaped, key=lambda s: (s.user_name, s.connector))

    return {
        "dry_run": dry_run,
        "gain": ordered(diff.created),
        "lose": ordered(diff.revoked),
        "change": ordered(diff.updated),
        "held": len(diff.held),
        "hold_url": f"{PREFIX}/revocation-holds/{diff.hold_id}" if diff.hold_id else None,
    }


class _Application(OpenAPI):
    def generate_spec_json(self) -> None:
        """flask-openapi3's document, without the validation error it adds to every
        operation naming none, on operations that never answer it."""
        super().generate_spec_json()
        for item in self.spec_json["paths"].values():
            for operation in item.values():
                if operation.get("operationId") in SELF_VALIDATED:
                    operation["responses"].pop(self.validation_error_status, None)


def application(import_name: str = "provisioning") -> OpenAPI:
    """A Flask application able to carry the documented /api/v1 blueprint."""
    from flask_openapi3 import Info

    return _Application(
        import_name,
        info=Info(
            title="Connector access provisioning",
            version="1",
            description=(
                "Admin, HR and enforcement API: connectors, actions, group mappings with dry "
                "runs, users, groups, grants, exceptions, audit and decisions."
            ),
        ),
        security_schemes={
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT access token (RFC 9068) or static API token",
            }
        },
        doc_ui=False,
        validation_error_status=422,
        validation_error_model=schemas.Problem,
        validation_error_callback=validation_problem,
    )
