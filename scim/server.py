"""The SCIM edge mounted: scim2-flask at /scim/v2, bearer-token authentication, errors as SCIM.

It authenticates the token (scope ``scim:provision``), names it as the actor of every
change, and hands the request to scim2-server's service and handler
(:mod:`scim.service`), which call :class:`scim.storage.SqlStorage` (for /Bulk, once per
operation, each its own unit of work). Client quirks: :mod:`scim.quirks`; answers:
:mod:`scim.answers`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, request
from scim2_flask import ScimServer
from scim2_models import ForbiddenException, UnauthorizedException
from scim2_server.responses import ScimResponse
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from provisioning.audit.log import Origin, Source
from provisioning.database import Database
from provisioning.settings import DEFAULTS, Settings
from provisioning.tokens import secrets
from provisioning.tokens.credentials import Scope, authenticate, note_use
from provisioning.web import bodies, logs, problems
from scim.answers import Kept
from scim.resources import BULK_MAX_PAYLOAD_SIZE, provider
from scim.service import ProvisioningHandler, ProvisioningService, scim_error
from scim.storage import SqlStorage, reset_origin, set_origin

URL_PREFIX = "/scim/v2"


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
        note_use(self.database, principal)
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
