"""Real downstream servers on 127.0.0.1: a webhook receiver and a SCIM server (scim2-server)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

from scim2_server.memory import InMemoryStorage
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
from scim2_server.utils import load_default_provider
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from provisioning.delivery import webhook


class _Served:
    """A WSGI application served by Werkzeug in a thread; ``stop`` frees the port."""

    def __init__(self, application: Any, port: int = 0, ssl_context: Any = None) -> None:
        self._application = application
        self._ssl_context = ssl_context
        self._start(port)

    def _start(self, port: int) -> None:
        self.server = make_server(
            "127.0.0.1", port, self._application, threaded=True, ssl_context=self._ssl_context
        )
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def restart(self) -> None:
        """Listen again on the same port (after :meth:`stop`)."""
        self._start(self.port)


class WebhookReceiver(_Served):
    """Accepts signed events, like a careful receiver: verifies, dedupes by event id.

    ``answer`` makes it refuse (an HTTP status, or a status line with a phrase of
    its own) with ``refusal`` as the body, or answer garbage (a 200 with a body
    that is not JSON still acknowledges: only the status counts).
    """

    def __init__(self, secret: str, ssl_context: Any = None) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []  # every accepted request, repeats included
        self.hosts: list[str] = []  # the Host header of each accepted request
        self.request_ids: dict[str, str | None] = {}  # event id -> its X-Request-ID
        self.location: str | None = None  # sent with ``answer``, for a redirect
        self.rejected_signatures = 0
        self.delay = 0.0  # seconds to take over each accepted event (a slow receiver)
        self.answer: int | str | None = None
        self.refusal: bytes = b"down for maintenance"
        self.lock = threading.Lock()
        super().__init__(self._app, ssl_context=ssl_context)

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/events"

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        if self.answer is not None and self.answer != 200:
            refusal = Response(self.refusal, status=self.answer)
            if self.location is not None:
                refusal.headers["Location"] = self.location
            return refusal(environ, start_response)
        signature = request.headers.get(webhook.SIGNATURE_HEADER, "")
        if not webhook.verify(self.secret, signature, body):
            with self.lock:
                self.rejected_signatures += 1
            return Response("bad signature", status=401)(environ, start_response)
        event = json.loads(body)
        if self.delay:
            time.sleep(self.delay)
        assert request.headers[webhook.EVENT_ID_HEADER] == event["id"]
        with self.lock:
            self.received.append(event)
            self.hosts.append(request.host)
            self.request_ids[event["id"]] = request.headers.get("X-Request-ID")
        return Response("<html>ok</html>", status=200)(environ, start_response)

    def unique(self) -> dict[str, dict[str, Any]]:
        """The events applied once each (dedupe by event id, as a receiver should)."""
        with self.lock:
            return {e["id"]: e for e in self.received}

    def repeats(self) -> int:
        with self.lock:
            return sum(n - 1 for n in Counter(e["id"] for e in self.received).values())

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.unique().values() if e["type"] == kind]


class ScimServer(_Served):
    """scim2-server's in-memory SCIM server behind a bearer token."""

    def __init__(self, token: str) -> None:
        provider = load_default_provider()
        provider.config.authentication_schemes = [BEARER_TOKEN_SCHEME]
        self.storage = InMemoryStorage()
        application = BearerTokenApplication(self.storage, provider, bearer_tokens=[token])
        super().__init__(application)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def _resources(self, kind: str) -> list[Any]:
        return [r for r in self.storage.resources if type(r).__name__.startswith(kind)]

    def user(self, user_id: Any) -> Any | None:
        return next(
            (u for u in self._resources("User") if u.external_id == str(user_id)),
            None,
        )

    def members(self, slug: str) -> set[str]:
        """External ids (our user ids) of the users in the connector's downstream group."""
        group = next((g for g in self._resources("Group") if g.display_name == slug), None)
        if group is None:
            return set()
        by_id = {u.id: u.external_id for u in self._resources("User")}
        return {by_id[m.value] for m in group.members or []}

    def groups(self) -> list[str]:
        return sorted(g.display_name for g in self._resources("Group"))


class CallbackReceiver(_Served):
    """An enforcement point's callback endpoint: accepts POSTs under ``/callbacks/`` whose
    ``X-Provisioning-Signature`` verifies with ``secret`` (401 otherwise), keeping each one's
    path, event id and body; ``answer`` (a status) refuses instead, to make delivery retry."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.raw: list[tuple[str, bytes]] = []  # (signature header, body) as received
        self.rejected_signatures = 0
        self.answer: int | None = None
        self.refused = 0
        self.lock = threading.Lock()
        super().__init__(self._app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks"

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        if self.answer is not None:
            with self.lock:
                self.refused += 1
            return Response("not now", status=self.answer)(environ, start_response)
        signature = request.headers.get(webhook.SIGNATURE_HEADER, "")
        if not webhook.verify(self.secret, signature, body):
            with self.lock:
                self.rejected_signatures += 1
            return Response("bad signature", status=401)(environ, start_response)
        with self.lock:
            self.raw.append((signature, body))
            self.received.append(
                {
                    "path": request.path,
                    "event_id": request.headers.get(webhook.EVENT_ID_HEADER),
                    "event_type": request.headers.get(webhook.EVENT_TYPE_HEADER),
                    "body": json.loads(body),
                }
            )
        return Response(status=204)(environ, start_response)
