"""scim2-server's service and handler: requests read under the service's rules, writes retried.

- :class:`ProvisioningService` reads requests: bodies under the service's rule for bodies
  (:func:`_document`) with the client quirks rewritten (:mod:`scim.quirks`), searches
  bounded, ``/Me`` refused; its answers are shaped by :class:`scim.answers.Shaping`.
- :class:`ProvisioningHandler` is scim2-server's handler with the documented steps
  ``patch_resource``, ``replace_resource`` and ``delete_resource`` overridden (a change
  lost to a concurrent one is applied again). Creation, replacement, PATCH, deletion and
  bulk are scim2-server's own flows. Three flows are its own:

  - ``query`` and ``search`` / ``search_with_body`` answer from :class:`scim.answers.Answers`
    (an answer built once per stored document). They repeat scim2-server's flows
    (route, authorize, read, respond) because scim2-server has no step between the
    storage and the response a subclass can override; they would go if ``ScimHandler``
    had one, as it has ``patch_resource`` for PATCH (say ``query_resource(base_url,
    resource_type, resource_id, parameters)`` returning the response, and
    ``search_resources`` likewise), or if ``ScimStorage.get`` / ``search`` could hand the
    service a key under which it may keep the response it builds.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from scim2_models import (
    Context,
    InvalidFilterException,
    InvalidSyntaxException,
    InvalidValueException,
    NotImplementedException,
    PayloadTooLargeException,
    PreconditionFailedException,
    ResourceType,
    ResponseParameters,
    SearchRequest,
)
from scim2_server.bulk import BulkPlan
from scim2_server.conditions import Conditions
from scim2_server.errors import UnsupportedMediaTypeException
from scim2_server.handler import ScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import Operation
from scim2_server.service import ScimService

from provisioning import text
from provisioning.web import bodies
from scim import filters, quirks
from scim.answers import Answers, Kept, Shaping, names
from scim.mapping import Document
from scim.storage import SqlStorage

# The largest startIndex a search accepts: an offset any database pages to (PostgreSQL's
# OFFSET is a bigint, SQLite's an int64). Past it, 400; a page of so many is past the end.
MAX_START_INDEX = 2**31 - 1


class ProvisioningService(Shaping):
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
        shapes :func:`scim.quirks.normalise` accepts rewritten (in bulk operations too).

        scim2-server checks a bulk request's maxPayloadSize on the body as sent, before.
        """
        document = _document(body, content_type)
        if quirks.normalise(document, scim_ctx):
            body = json.dumps(document, separators=(",", ":")).encode()
        return super().read_body(model, body, content_type, scim_ctx)

    def decode_body(self, body: bytes, content_type: str | None) -> Any:
        """A search request's body (``.search``), read under the rule for bodies."""
        return _document(body, content_type)


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
            names(parameters.attributes),
            names(parameters.excluded_attributes),
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
