"""The SCIM edge: scim2-flask mounted at /scim/v2, bearer-token authentication, client quirks.

Thin on purpose: it authenticates the token (scope ``scim:provision``), names
it as the actor of every change, rewrites the few request shapes real clients
send that RFC 7644 does not (Entra ID's capitalised PATCH ops, booleans sent as
strings, dotted keys in a path-less replace; in bulk operations too), and hands
the request to scim2-server, which calls :class:`scim.storage.SqlStorage` (for
/Bulk, once per operation, each its own unit of work).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, g, request
from scim2_flask import ScimServer
from scim2_models import (
    Context,
    ForbiddenException,
    InvalidFilterException,
    InvalidSyntaxException,
    InvalidValueException,
    NotImplementedException,
    Path,
    PayloadTooLargeException,
    PreconditionFailedException,
    Reference,
    Resource,
    ResourceType,
    ResponseParameters,
    SearchRequest,
    UnauthorizedException,
)
from scim2_server.bulk import BulkPlan
from scim2_server.conditions import Conditions
from scim2_server.errors import UnsupportedMediaTypeException
from scim2_server.handler import ScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import Operation
from scim2_server.service import ScimService
from scim2_server.storage import SearchPage
from scim2_server.utils import parametrize
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from provisioning import text
from provisioning.audit.log import Origin, Source
from provisioning.database import Database
from provisioning.settings import DEFAULTS, Settings
from provisioning.tokens import secrets
from provisioning.tokens.credentials import Scope, authenticate
from provisioning.web import bodies, logs, problems
from scim import filters
from scim.mapping import Document
from scim.resources import BULK_MAX_PAYLOAD_SIZE, ENTERPRISE, provider
from scim.storage import SqlStorage, reset_origin, set_origin

URL_PREFIX = "/scim/v2"
# The largest startIndex a search accepts: an offset any database pages to (PostgreSQL's
# OFFSET is a bigint, SQLite's an int64). Past it, 400; a page of so many is past the end.
MAX_START_INDEX = 2**31 - 1


class ProvisioningService(ScimService):
    """scim2-server's service: bodies read under the service's rule, and the PATCH bodies
    Okta and Entra ID send accepted."""

    def __init__(
        self, provider: Any, *, secret: str | bytes | Callable[[], str] | None = None
    ) -> None:
        """``secret`` may be a function, called when the first cursor is sealed or opened
        (the database's secret: the app may be built before its tables)."""
        if callable(secret):
            super().__init__(provider, secret="read-on-first-use")
            self._cursors = _Deferred(lambda: self._build_cursors(secret()))
        else:
            super().__init__(provider, secret=secret)
        self._parameters: dict[tuple[Any, ...], ResponseParameters[Any]] = {}
        self._envelopes: dict[tuple[Any, ...], dict[str, Any]] = {}

    def me_target(self, request: ScimRequest) -> tuple[ResourceType, str]:
        """``/Me`` is not supported: 501, as RFC 7644 section 3.11 asks of such a provider.

        SCIM clients authenticate with provisioning tokens, which are not users: no
        request has a resource of its own for ``/Me`` to stand for.
        """
        raise NotImplementedException(detail=_NO_ME)

    def me_creation_type(self, request: ScimRequest) -> ResourceType:
        """``POST /Me`` is not supported either: a token does not register itself."""
        raise NotImplementedException(detail=_NO_ME)

    def read_search(
        self, resource_types: list[ResourceType], payload: Any
    ) -> tuple[SearchRequest[Any], Any]:
        """scim2-server's reading of a search (query or ``.search`` body), with startIndex
        bounded: at most :data:`MAX_START_INDEX`. scim2-models reads a startIndex below 1
        as 1 and a negative count as 0, and scim2-server bounds count by maxPageSize."""
        for where, value in text.strings(payload):
            why = text.problem(value)
            if why is not None:
                refusal = InvalidFilterException if where == "filter" else InvalidValueException
                raise refusal(detail=f"{where} {why}")
        search_request, position = super().read_search(resource_types, payload)
        if search_request.filter is not None:
            filters.check_size(search_request.filter.ast)
        start_index = search_request.start_index
        if start_index is not None and start_index > MAX_START_INDEX:
            raise InvalidValueException(
                detail=f"startIndex is at most {MAX_START_INDEX}, not {start_index}"
            )
        return search_request, position

    def read_bulk(self, body: bytes, content_type: str | None) -> BulkPlan:
        """scim2-server's plan of a bulk request; a negative failOnErrors is refused."""
        plan = super().read_bulk(body, content_type)
        if plan.fail_on_errors is not None and plan.fail_on_errors < 0:
            raise InvalidValueException(
                detail=f"failOnErrors is a number of errors, not {plan.fail_on_errors}"
            )
        return plan

    def read_body(self, model: Any, body: bytes, content_type: str | None, scim_ctx: Context):
        """Every body scim2-server validates (creations, replacements, PATCH, bulk), read
        under the service's rule for bodies first (:func:`_document`), with the client
        shapes :func:`normalise` accepts rewritten (in bulk operations too).

        scim2-server checks a bulk request's maxPayloadSize on the body as sent, before.
        """
        document = _document(body, content_type)
        if normalise(document, scim_ctx):
            body = json.dumps(document, separators=(",", ":")).encode()
        return super().read_body(model, body, content_type, scim_ctx)

    def decode_body(self, body: bytes, content_type: str | None) -> Any:
        """A search request's body (``.search``), read under the rule for bodies."""
        return _document(body, content_type)

    def publish(self, base_url: str, resource: Resource[Any]) -> Resource[Any]:
        """The resource in the form sent to the client: scim2-server's publishing, in place.

        As :meth:`ScimService.publish`: ``meta.location`` is set, references to other
        resources (``Users/{id}``, ``Groups/{id}``) become their URLs, and the version is
        left out when ETags are not supported. Two differences, both for speed, neither
        visible to a client: the resource is changed in place rather than deep-copied,
        because :class:`scim.storage.SqlStorage` builds every resource it returns afresh
        from rows (nothing else holds it); and the reference attributes of each model are
        found once, not walked again for every resource published.
        """
        assert resource.meta is not None and resource.id is not None
        update: dict[str, Any] = {
            "location": self.resource_location(
                base_url, self.get_resource_type_of(resource), resource.id
            )
        }
        if not self.etag_supported:
            update["version"] = None
        resource.meta = resource.meta.model_copy(update=update)
        for path, sub_field in _reference_paths(type(resource)):
            if sub_field is None:
                path.set(resource, self._locate(base_url, path.get(resource)), strict=False)
                continue
            entries = path.get(resource)
            for entry in entries if isinstance(entries, list) else [entries]:
                if entry is not None:
                    reference = getattr(entry, sub_field)
                    setattr(entry, sub_field, self._locate(base_url, reference))
        return resource

    def _locate(self, base_url: str, reference: Any) -> Any:
        if isinstance(reference, list):
            return [self._locate(base_url, item) for item in reference]
        if reference is None:
            return None
        return self.reference_location(base_url, reference)

    def read_response_parameters(
        self, resource_type: ResourceType, query: Any
    ) -> ResponseParameters[Any]:
        """``attributes`` and ``excludedAttributes`` read as scim2-server reads them.

        The parameters depend on the two strings alone and nothing changes them, so each
        reading is kept and given again (at most 256: the strings are the client's).
        """
        key = (resource_type.id, query.get("attributes"), query.get("excludedAttributes"))
        read = super().read_response_parameters
        return _kept(self._parameters, key, lambda: read(resource_type, query))

    def listing(
        self,
        resource_types: list[ResourceType],
        page: SearchPage,
        search_request: SearchRequest[Any],
        entries: list[dict[str, Any]],
    ) -> ScimResponse:
        """:meth:`ScimService.search_response` for a page whose resources are already
        published and dumped (``entries``, as scim2-server dumps each one).

        scim2-server builds its ``ListResponse`` from the dumped resources, which validates
        each of them once more and dumps it again; here the envelope (totals, cursors,
        start index) is scim2-server's own, built for an empty page, and the entries are
        then set in it as they are. An index page's envelope depends on its total and
        start index alone (no cursor is sealed in it), so those are built once each (at
        most 256 kept).
        """

        def envelope() -> dict[str, Any]:
            empty = SearchPage(page.total, [], page.next, page.previous)
            body = self.search_response("", resource_types, empty, search_request).body
            assert isinstance(body, dict)
            return body

        if search_request.cursor is None:
            types = tuple(str(rt.id) for rt in resource_types)
            key = (types, page.total, search_request.start_index)
            kept = _kept(self._envelopes, key, envelope)
        else:
            kept = envelope()
        body = {**kept, "itemsPerPage": len(entries), "Resources": entries}
        return ScimResponse(HTTPStatus.OK, body)

    def patch_response(
        self,
        base_url: str,
        resource: Resource[Any],
        response_parameters: ResponseParameters[Any],
    ) -> ScimResponse:
        """200 with the resource, as Okta expects (RFC 7644 section 3.5.2 allows either)."""
        return self.resource_response(
            self.publish(base_url, resource),
            Context.RESOURCE_REPLACEMENT_RESPONSE,
            response_parameters,
        )


@functools.cache
def _reference_paths(model: type[Resource[Any]]) -> list[tuple[Path[Any], str | None]]:
    """The attributes of ``model`` that refer to other resources, as scim2-server finds them
    when publishing: each as (path, sub-attribute holding the reference, or None when the
    attribute itself is the reference). A model's schema does not change, so neither do these.
    """
    found: list[tuple[Path[Any], str | None]] = []
    for path in parametrize(Path, model).iter_paths(target_type=[Reference]):
        binding = path.resolve()
        assert binding is not None
        reference_types = set(binding.target_type.__reference_types__)
        if not reference_types or reference_types & {"external", "uri"}:
            continue
        if binding.sub_field_name is None:
            found.append((path, None))
        else:
            head = f"{path.schema}:{path.parts[0]}" if path.schema else path.parts[0]
            found.append((Path(head), binding.sub_field_name))
    return found


class _Deferred:
    """An object built on first use of any of its attributes, once, whichever thread asks."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._built: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if self._built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._build()
        return getattr(self._built, name)


_NO_ME = (
    "/Me is not supported: SCIM clients authenticate with provisioning tokens, which are "
    "not users, so /Me has no resource to stand for"
)


def _document(body: bytes, content_type: str | None) -> Any:
    """The JSON document of a SCIM request body, under the service's rule for bodies
    (:mod:`provisioning.web.bodies`: JSON media type, UTF-8, JSON within the depth limit)
    whose every string keeps the character rule (:mod:`provisioning.text`: no NUL, no
    control character but TAB, LF, CR); a body without Content-Type is JSON (RFC 7644
    section 3.8). Refusals are SCIM errors (``invalidValue`` for a character)."""
    try:
        bodies.check_media_type(content_type, untyped_is_json=True)
        document = bodies.parse(body)
    except bodies.Refused as refused:
        raise scim_error(refused) from None
    try:
        text.check_document(document)
    except text.TextError as exc:
        raise InvalidValueException(detail=str(exc)) from None
    return document


def scim_error(refused: bodies.Refused) -> Exception:
    """The SCIM error of a body the rule refused."""
    if refused.code == 413:
        return PayloadTooLargeException(detail=refused.description)
    if refused.code == 415:
        return UnsupportedMediaTypeException(detail=refused.description)
    return InvalidSyntaxException(detail=refused.description)


def normalise(document: Any, scim_ctx: Context) -> bool:
    """The request shapes real clients send that RFC 7644 does not, rewritten in place in
    a decoded body (anything else is left for the validator); True when it may have changed.

    - a User's enterprise ``manager`` given by id only gets its ``$ref``
      (:func:`_resource`);
    - Entra ID's PATCH shapes in RFC 7644 form (:func:`_patch`);
    - the same in each operation of a bulk request (:func:`_bulk`).
    """
    if not isinstance(document, dict):
        return False
    if scim_ctx in (Context.RESOURCE_CREATION_REQUEST, Context.RESOURCE_REPLACEMENT_REQUEST):
        return _resource(document)
    if scim_ctx == Context.RESOURCE_PATCH_REQUEST:
        return _patch(document)
    if scim_ctx == Context.BULK_REQUEST:
        return _bulk(document)
    return False


def _resource(document: dict[str, Any]) -> bool:
    """A User's enterprise ``manager`` given by id only (as Okta sends it) gets its ``$ref``,
    in place; True when it changed.

    RFC 7643 section 4.3 makes ``$ref`` required and scim2-models enforces it, but clients
    send ``{"value": id}`` (or the bare id); the reference is the manager's User resource.
    """
    enterprise = next((v for k, v in document.items() if k.lower() == ENTERPRISE.lower()), None)
    if not isinstance(enterprise, dict) or "manager" not in enterprise:
        return False
    enterprise["manager"] = _manager(enterprise["manager"])
    return True


def _manager(value: Any) -> Any:
    if isinstance(value, str):
        value = {"value": value}
    if isinstance(value, dict) and isinstance(value.get("value"), str) and not value.get("$ref"):
        value = {**value, "$ref": f"Users/{value['value']}"}
    return value


def _patch(document: dict[str, Any]) -> bool:
    """Entra ID's PATCH shapes in RFC 7644 form, in place; True when it is a PatchOp.

    - ``"op": "Replace"`` (any case) becomes ``"replace"``;
    - ``"active": "False"`` (a boolean sent as a string) becomes ``false``;
    - a path-less value with dotted keys (``"name.givenName": "x"``) or attribute URNs
      (``"urn:...:enterprise:2.0:User:employeeNumber": "1"``) becomes nested objects;
    - the enterprise ``manager`` sent as a bare id becomes ``{"value": id}``;
    - ``remove`` of ``members`` with a value list becomes one ``members[value eq "id"]``
      removal per listed member (RFC 7644 would remove every member).
    """
    if not isinstance(document.get("Operations"), list):
        return False
    operations = []
    for operation in document["Operations"]:
        if not isinstance(operation, dict):
            operations.append(operation)
            continue
        if isinstance(operation.get("op"), str):
            operation["op"] = operation["op"].lower()
        value = operation.get("value")
        path = operation.get("path")
        if isinstance(value, dict) and not path:
            operation["value"] = _nest(value)
        elif isinstance(path, str) and path.lower() == "active":
            operation["value"] = _boolean(value)
        elif isinstance(path, str) and path.lower().endswith("manager"):
            operation["value"] = _manager(value)
        elif (
            operation.get("op") == "remove"
            and isinstance(path, str)
            and path.lower() == "members"
            and isinstance(value, list)
            and value
            and all(isinstance(m, dict) and isinstance(m.get("value"), str) for m in value)
        ):
            operations += [
                {"op": "remove", "path": f"members[value eq {json.dumps(m['value'])}]"}
                for m in value
            ]
            continue
        operations.append(operation)
    document["Operations"] = operations
    return True


def _bulk(document: dict[str, Any]) -> bool:
    """:func:`_resource` and :func:`_patch` in each operation of a bulk request, in place: a
    client sends the same data alone or in a bulk. True when an operation changed."""
    if not isinstance(document.get("Operations"), list):
        return False
    changed = False
    for operation in document["Operations"]:
        if not isinstance(operation, dict) or not isinstance(operation.get("data"), dict):
            continue
        method = operation.get("method")
        method = method.upper() if isinstance(method, str) else None
        if method in ("POST", "PUT"):
            changed = _resource(operation["data"]) or changed
        elif method == "PATCH":
            changed = _patch(operation["data"]) or changed
    return changed


_URN_PREFIX = "urn:ietf:params:scim:schemas:"


def _boolean(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _nest(value: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, item in value.items():
        target = nested
        path = key
        if key.lower().startswith(_URN_PREFIX) and key.count(":") > 6:
            urn, _, path = key.rpartition(":")
            if isinstance(item, dict) and not path:
                path = ""
            target = nested.setdefault(urn, {})
        if path == "" and isinstance(item, dict):
            target.update(item)
            continue
        parts = path.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise InvalidValueException(detail=f"{key!r} names a part of a value")
        leaf = parts[-1]
        if leaf.lower() == "active":
            item = _boolean(item)
        elif leaf.lower() == "manager":
            item = _manager(item)
        target[leaf] = item
    return nested


def _kept(table: dict[Any, Any], key: Any, build: Callable[[], Any]) -> Any:
    """``table[key]``, built and kept when missing; at most 256 kept, as keys come from
    clients. For values that depend on their key alone and that nothing changes."""
    value = table.get(key)
    if value is None:
        value = build()
        if len(table) < 256:
            table[key] = value
    return value


class Kept(ScimResponse):
    """An answer as :class:`Answers` keeps it: never changed once built, so its JSON text
    is serialised once, when first sent (:meth:`ProvisioningScimServer._to_response`)."""

    @functools.cached_property
    def text(self) -> str:
        return json.dumps(self.body)


class Answers:
    """The answers to the last reads of one resource, by what they were built from.

    A read's answer depends only on the stored document (:class:`scim.mapping.Document`:
    the rows of the resource and of its groups, grants or members), the base URL and the
    ``attributes`` / ``excludedAttributes`` asked for. Keyed by all of them (by their
    SHA-256), an answer is never stale: the rows are read on every request, and a change
    to any of them makes another key. What it saves is scim2-server's validating,
    publishing and serialising of an unchanged resource, which costs more than reading
    it. At most ``size`` answers are kept, the least recently used dropped first;
    documents larger than ``max_key`` characters (a group of a hundred members or more)
    are not kept. A User's answer is 1-2 KB: about 5-10 MB per process when full.
    """

    def __init__(self, size: int = 4096, max_key: int = 16_384) -> None:
        self.size = size
        self.max_key = max_key
        self._answers: OrderedDict[bytes, Kept] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _digest(key: tuple[str, ...]) -> bytes:
        return hashlib.sha256("\0".join(key).encode()).digest()

    def get(self, key: tuple[str, ...]) -> Kept | None:
        digest = self._digest(key)
        with self._lock:
            answer = self._answers.get(digest)
            if answer is not None:
                self._answers.move_to_end(digest)
            return answer

    def put(self, key: tuple[str, ...], answer: ScimResponse) -> Kept:
        """Keep ``answer`` (unless its document is too large); returns it as kept."""
        kept = Kept(answer.status, answer.body, answer.headers)
        if len(key[-1]) > self.max_key:
            return kept
        digest = self._digest(key)
        with self._lock:
            self._answers[digest] = kept
            self._answers.move_to_end(digest)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
        return kept


class ProvisioningHandler(ScimHandler):
    """scim2-server's handler; a change lost to a concurrent one is applied again, and
    reads of unchanged resources are answered from :class:`Answers`.

    The handler reads the resource, applies the request to it and stores it only if the
    stored version is still the one read. Without ``If-Match`` the client asked for no
    precondition, so a version that moved meanwhile (another request for the same group,
    say) means: read again and apply again, not 412. With ``If-Match`` the 412 stands.
    """

    ATTEMPTS = 5

    def __init__(self, service: ScimService, storage: SqlStorage) -> None:
        super().__init__(service, storage)
        self.answers = Answers()

    def create(self, request: ScimRequest) -> ScimResponse:
        """Create a resource (RFC 7644 section 3.3) as scim2-server does, but with the
        resource of the answer built from the stored document after the commit: the
        writers' lock is held for the transaction only, not while the answer is built."""
        with self.service.provider:
            target = self.service.route(request, Operation.create)
            resource_type = self.service.resource_type_at(str(target.endpoint))
            self.service.authorize(request, target, resource_type)
            resource = self.service.read_creation(
                resource_type, request.body, request.header("Content-Type")
            )
            with self.storage.operation():
                document = self.storage.create_document(resource_type, resource)
            created = document.resource(self.service.get_model(resource_type))
            return self.service.creation_response(request.base_url, created)

    def query(self, request: ScimRequest) -> ScimResponse:
        """Read a resource (RFC 7644 section 3.4.1) as scim2-server does, its answer built
        once per stored document (:meth:`_answer`). ``If-None-Match`` gets its 304."""
        with self.service.provider:
            target = self.service.route(request, Operation.query)
            resource_type = self.service.resource_type_at(str(target.endpoint))
            self.service.authorize(request, target, resource_type)
            parameters = self.service.read_response_parameters(resource_type, request.query)
            with self.storage.operation():
                document = self.storage.document(
                    resource_type, str(target.resource_id), response_parameters=parameters
                )
            answer = self._answer(request.base_url, resource_type, document, parameters)
            version = answer.headers.get("ETag")
            if not self.service.read_conditions(request).check(version, "GET"):
                # RFC 9110 section 15.4.5: a 304 carries the ETag a 200 would have
                headers = {"ETag": version} if version else {}
                response = ScimResponse(HTTPStatus.NOT_MODIFIED, None, headers)
            elif target.me:  # me_response adds a header: not to the answer kept
                response = ScimResponse(answer.status, answer.body, dict(answer.headers))
            else:
                response = answer
            return self.service.me_response(request, target, response)

    def search(self, request: ScimRequest) -> ScimResponse:
        """Search with GET (RFC 7644 section 3.4.2) as scim2-server does; see :meth:`_found`."""
        with self.service.provider:
            target = self.service.route(request, Operation.search)
            resource_types = self.service.searched_types(target.endpoint)
            authorized = self.service.authorized_types(request, target, resource_types)
            search_request, position = self.service.read_search_query(resource_types, request.query)
            return self._found(request, resource_types, authorized, search_request, position)

    def search_with_body(self, request: ScimRequest) -> ScimResponse:
        """Search with POST on ``.search`` (RFC 7644 section 3.4.3); see :meth:`_found`."""
        with self.service.provider:
            target = self.service.route(request, Operation.search_with_body)
            resource_types = self.service.searched_types(target.endpoint)
            authorized = self.service.authorized_types(request, target, resource_types)
            search_request, position = self.service.read_search_body(
                resource_types, request.body, request.header("Content-Type")
            )
            return self._found(request, resource_types, authorized, search_request, position)

    def _found(
        self,
        request: ScimRequest,
        resource_types: list[ResourceType],
        authorized: list[ResourceType],
        search_request: SearchRequest[Any],
        position: Any,
    ) -> ScimResponse:
        """The page of a search, each resource in it answered as a read of it would be."""
        with self.storage.operation():
            page = self.storage.search_documents(authorized, search_request, position=position)
        entries = [
            self._answer(request.base_url, resource_type, document, search_request).body
            for resource_type, document in page.resources
        ]
        return self.service.listing(resource_types, page, search_request, entries)

    def _answer(
        self,
        base_url: str,
        resource_type: ResourceType,
        document: Document,
        parameters: ResponseParameters[Any],
    ) -> Kept:
        """The answer to a read of the resource ``document`` stores: the one already built
        from an equal document, for the same base URL and attributes asked, if there is one
        (:class:`Answers`). A search's entries are these answers' bodies: scim2-server dumps
        a search's resources as it dumps a read's."""
        key = (
            base_url,
            str(resource_type.name),
            _names(parameters.attributes),
            _names(parameters.excluded_attributes),
            document.key,
        )
        answer = self.answers.get(key)
        if answer is None:
            resource = document.resource(self.service.get_model(resource_type))
            built = self.service.query_response(base_url, resource, parameters, Conditions())
            answer = self.answers.put(key, built)
        return answer

    def _again(self, conditions: Conditions, attempt: int, step):
        try:
            return step()
        except PreconditionFailedException:
            if conditions.if_match or conditions.if_none_match or attempt + 1 >= self.ATTEMPTS:
                raise
            return _RETRY

    def patch_resource(self, resource_type, resource_id, patch_op, conditions):
        for attempt in range(self.ATTEMPTS):
            result = self._again(
                conditions,
                attempt,
                lambda: super(ProvisioningHandler, self).patch_resource(
                    resource_type, resource_id, copy.deepcopy(patch_op), conditions
                ),
            )
            if result is not _RETRY:
                return result
        raise AssertionError("unreachable")

    def replace_resource(self, resource_type, current, replacement, conditions):
        for attempt in range(self.ATTEMPTS):
            if attempt:
                current = self.storage.get(resource_type, current.id)
            result = self._again(
                conditions,
                attempt,
                lambda current=current: super(ProvisioningHandler, self).replace_resource(
                    resource_type, current, copy.deepcopy(replacement), conditions
                ),
            )
            if result is not _RETRY:
                return result
        raise AssertionError("unreachable")

    def delete_resource(self, resource_type, resource_id, conditions):
        for attempt in range(self.ATTEMPTS):
            result = self._again(
                conditions,
                attempt,
                lambda: super(ProvisioningHandler, self).delete_resource(
                    resource_type, resource_id, conditions
                ),
            )
            if result is not _RETRY:
                return
        raise AssertionError("unreachable")


_RETRY = object()


def _names(paths: list[Any] | None) -> str:
    """The attribute paths asked for, as a part of an :class:`Answers` key."""
    return ",".join(str(p) for p in paths or ())


class ProvisioningScimServer(ScimServer):
    """scim2-flask's extension, behind bearer tokens carrying ``scim:provision``."""

    def __init__(
        self,
        database: Database,
        cursor_secret: str | Callable[[], str],
        max_payload_size: int = BULK_MAX_PAYLOAD_SIZE,
        settings: Settings = DEFAULTS,
    ) -> None:
        scim_provider = provider(max_payload_size)
        super().__init__(
            SqlStorage(database, settings),
            scim_provider,
            service=ProvisioningService(scim_provider, secret=cursor_secret),
            url_prefix=URL_PREFIX,
        )
        self.database = database

    def create_blueprint(self):
        # init_app has built the service and a plain handler; serve through ours.
        self.handler = ProvisioningHandler(self.service, self.storage)
        blueprint = super().create_blueprint()
        blueprint.before_request(self._authenticate)
        blueprint.teardown_request(self._forget)
        blueprint.register_error_handler(bodies.Refused, self._refused)
        blueprint.register_error_handler(Exception, self._unexpected)
        return blueprint

    def _authenticate(self) -> None:
        scheme, _, secret = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise UnauthorizedException(detail="a bearer token is required")
        principal = self.database.hot_read(
            lambda connection: authenticate(connection, secret.strip())
        )
        if principal is None:
            raise UnauthorizedException(detail="the bearer token is unknown or revoked")
        if Scope.SCIM_PROVISION not in principal.scopes:
            raise ForbiddenException(
                detail=f"token {principal.name!r} lacks the scope {Scope.SCIM_PROVISION.value}"
            )
        g.scim_principal = principal
        g.scim_origin_token = set_origin(Origin(actor=principal.name, source=Source.SCIM))

    @staticmethod
    def _forget(_exc: BaseException | None) -> None:
        token = g.pop("scim_origin_token", None)
        if token is not None:
            reset_origin(token)

    def read_body(self, scim_request: Any) -> bytes:
        """The body, whose size was checked before any handler (PROVISIONING_MAX_REQUEST_BYTES,
        which /Bulk announces as maxPayloadSize: :mod:`provisioning.web.bodies`); the service
        reads it as JSON when the operation takes one (:meth:`ProvisioningService.read_body`),
        so that the errors that come first (404, 405, 501) still do."""
        return bodies.raw()

    def _refused(self, refused: bodies.Refused) -> Response:
        """A body the rule refused before any handler (413), as a SCIM error."""
        return self._to_response(self.service.error_response(scim_error(refused)))

    def answer_error(self, exception: Exception) -> Response:
        """Any error of a request under /scim/v2, as a SCIM error (for those raised before
        the request reached the blueprint: :func:`provisioning.web.problems.edge_errors`)."""
        if isinstance(exception, bodies.Refused):
            return self._refused(exception)
        return self._unexpected(exception)

    def _unexpected(self, exception: Exception) -> Response:
        """Anything unforeseen: logged, and a SCIM error 500 that says nothing more."""
        if isinstance(exception, HTTPException):  # scim2-flask's own handler answers these
            return self._handle_http_exception(exception)
        current_app.logger.exception("unhandled error in %s", logs.request_line())
        return self._to_response(self.service.error_response(exception))

    def get_subject(self) -> Any:
        return g.get("scim_principal")

    @staticmethod
    def _to_response(scim_response: ScimResponse) -> Response:
        """scim2-flask's response; the JSON text of a kept answer is serialised once."""
        if isinstance(scim_response, Kept):
            return Response(
                scim_response.text, status=scim_response.status, headers=scim_response.headers
            )
        return ScimServer._to_response(scim_response)


def install(
    app: Flask,
    database: Database,
    cursor_secret: str | None = None,
    settings: Settings = DEFAULTS,
) -> ProvisioningScimServer:
    """Serve SCIM 2.0 at /scim/v2 on ``app``.

    ``cursor_secret`` seals the paging cursors; without it a random one is generated on
    first start and kept in the database (:func:`provisioning.tokens.secrets.shared`),
    so that every replica of the service accepts the others' cursors.
    The bulk maxPayloadSize announced is the app's body limit (``MAX_CONTENT_LENGTH``,
    from PROVISIONING_MAX_REQUEST_BYTES), the size the app actually accepts. The domain
    functions the storage calls are handed ``settings``.
    """
    limit = app.config.get("MAX_CONTENT_LENGTH") or BULK_MAX_PAYLOAD_SIZE
    server = ProvisioningScimServer(
        database, cursor_secret or _stored_secret(database), limit, settings
    )
    server.init_app(app)
    problems.edge_errors(app, URL_PREFIX, server.answer_error)

    return server


def _stored_secret(database: Database) -> str | Callable[[], str]:
    """The cursor key kept in the database, made now if it is the first start; while the
    database cannot answer (not reachable, not migrated yet), a function reading it when
    the first cursor is sealed or opened."""
    read = functools.partial(secrets.shared, database, secrets.SCIM_CURSORS)
    try:
        return read()
    except SQLAlchemyError:
        return read


def mount(app: Flask, settings: Settings, database: Database) -> ProvisioningScimServer:
    """Entry point ``provisioning.web``: how the application factory mounts SCIM."""
    return install(app, database, settings.scim_cursor_secret, settings)
