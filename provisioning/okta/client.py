"""A synchronous client for the Okta Management API, built on the okta SDK.

The SDK is asynchronous; this client runs it on one long-lived event loop
thread so that its OAuth token cache and HTTP session are reused. Requests
go through the SDK's request executor, which keeps its authentication (SSWS
token, or an OAuth 2.0 service app with ``private_key_jwt``) and its retries
of 429/503/504 after ``X-Rate-Limit-Reset``, but returns raw JSON: Okta's
data varies more than the SDK's strict response models allow, so records are
validated leniently here. Pagination follows ``Link: rel="next"`` (the 3.x
SDK does not), with Okta's documented page sizes, and the client sleeps
until the window resets when ``X-Rate-Limit-Remaining`` runs out, rather
than hammering.

The SDK refuses a plain-http org URL unless its own environment variable is
set; ``allow_http`` (``PROVISIONING_OKTA_ALLOW_HTTP``, which the settings
require for an ``http://`` URL) is the only switch: the variable is set, or
cleared, for the SDK's check while the client is built, then put back as it
was, so nothing else in the process sees it.
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

from okta.client import Client
from okta.pagination import PaginationHelper

log = logging.getLogger(__name__)

USERS_PAGE = 200
GROUP_MEMBERS_PAGE = 1000
LOGS_PAGE = 1000
SCOPES = ["okta.users.read", "okta.groups.read", "okta.logs.read"]
WRITE_SCOPES = ["okta.groups.manage"]
# Read by the SDK's configuration check only, when a client is built; any value disables it.
_SDK_HTTPS_SWITCH = "OKTA_TESTING_TESTINGDISABLEHTTPSCHECK"
_environment = threading.Lock()


class OktaError(Exception):
    """Okta could not be reached, refused the request, or answered something unusable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OktaClient:
    """One Okta org: paged reads of users, groups, members and the System Log."""

    def __init__(
        self,
        org_url: str,
        *,
        api_token: str | None = None,
        client_id: str | None = None,
        private_key: str | None = None,
        scopes: list[str] | None = None,
        max_retries: int = 2,
        allow_http: bool = False,
    ) -> None:
        self.org_url = org_url.rstrip("/")
        self.requests = 0
        config: dict[str, Any] = {
            "orgUrl": self.org_url,
            "rateLimit": {"maxRetries": max_retries},
            "requestTimeout": 30,
        }
        if api_token:
            config["token"] = api_token
        elif client_id and private_key:
            config.update(
                authorizationMode="PrivateKey",
                clientId=client_id,
                scopes=scopes or SCOPES,
                privateKey=private_key,
            )
        else:
            raise OktaError("Okta needs an API token, or a client id and a private key")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="okta", daemon=True)
        self._thread.start()
        try:
            with _https_check(disabled=allow_http):
                self._client: Client = self._run(self._create(config))
        except ValueError as exc:  # the SDK's configuration check, several lines long
            self.close()
            raise OktaError(f"Okta client: {_one_line(exc)}") from None

    @staticmethod
    async def _create(config: dict[str, Any]) -> Client:
        return Client(config)

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- one request ------------------------------------------------------

    async def _fetch(self, method: str, url: str) -> tuple[int, dict[str, Any], str]:
        executor = self._client.get_request_executor()
        request, error = await executor.create_request(method, url, headers={})
        if error is not None:
            raise OktaError(f"cannot build request {method} {url}: {error}")
        response, body, error = await executor.execute(request)
        status = getattr(response, "status", None)
        if error is not None:
            raise OktaError(f"{method} {_path(url)}: {_describe(error, status)}", status)
        headers = {k: v for k, v in response.headers.items()}
        # aiohttp keeps repeated headers; the SDK's helper reads one `Link`.
        links = response.headers.getall("Link", [])
        if links:
            headers["Link"] = ", ".join(links)
        return status, headers, body

    def request(self, method: str, url: str) -> tuple[Any, dict[str, Any]]:
        """JSON body and headers of one request (``url`` absolute, or a path)."""
        if url.startswith("/"):
            url = self.org_url + url
        self.requests += 1
        try:
            status, headers, body = self._run(self._fetch(method, url))
        except OktaError:
            raise
        except json.JSONDecodeError:  # the SDK parses some answers itself
            raise OktaError(f"{method} {_path(url)}: answer is not JSON") from None
        except Exception as exc:  # the SDK raises AttributeError on a refused connection
            raise OktaError(f"{method} {_path(url)}: {type(exc).__name__}: {exc}") from None
        self._respect_rate_limit(headers)
        if not body:
            return None, headers
        try:
            return json.loads(body), headers
        except json.JSONDecodeError:
            raise OktaError(f"{method} {_path(url)}: answer is not JSON", status) from None

    def _respect_rate_limit(self, headers: dict[str, Any]) -> None:
        remaining = headers.get("X-Rate-Limit-Remaining")
        reset = headers.get("X-Rate-Limit-Reset")
        if remaining is None or reset is None or int(float(remaining)) > 0:
            return
        date = headers.get("Date")
        server_now = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
        wait = max(float(reset) - server_now, 0) + 1
        log.info("Okta rate limit exhausted: waiting %.0f s for the window to reset", wait)
        time.sleep(min(wait, 60))

    # -- pages ------------------------------------------------------------

    def pages(self, path: str, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list, following the ``next`` cursor and resending the filters."""
        for items, _ in self.cursored(path, params):
            yield items

    def cursored(
        self, path: str, params: dict[str, Any], after: str | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """The pages of a list from the cursor ``after`` (None: the first), each with the
        cursor of the page after it (None after the last): where to resume."""
        while True:
            query = {**params, **({"after": after} if after else {})}
            items, headers = self.request("GET", f"{path}?{urlencode(query)}")
            if not isinstance(items, list):
                raise OktaError(f"GET {path}: expected a list")
            after = PaginationHelper.extract_next_cursor(headers) if items else None
            yield items, after or None
            if not after:
                return

    def users(self, search: str) -> Iterator[dict[str, Any]]:
        """Users matching an Okta ``search`` expression (DEPROVISIONED included)."""
        for page in self.pages("/api/v1/users", {"search": search, "limit": USERS_PAGE}):
            yield from page

    def groups(
        self, filter_: str | None = None, *, search: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Groups matching an Okta ``filter`` (e.g. ``lastMembershipUpdated gt``) or
        ``search`` expression (e.g. ``profile.name eq "Engineering"``); all without."""
        params = {"filter": filter_} if filter_ else {}
        if search:
            params["search"] = search
        for page in self.pages("/api/v1/groups", params):
            yield from page

    def group(self, group_id: str) -> dict[str, Any]:
        body, _ = self.request("GET", f"/api/v1/groups/{quote(group_id, safe='')}")
        if not isinstance(body, dict):
            raise OktaError(f"GET /api/v1/groups/{group_id}: expected a group")
        return body

    def group_members(self, group_id: str) -> Iterator[dict[str, Any]]:
        path = f"/api/v1/groups/{group_id}/users"
        for page in self.pages(path, {"limit": GROUP_MEMBERS_PAGE}):
            yield from page

    def member_pages(
        self, group_id: str, after: str | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """A group's members page by page from the cursor ``after`` (see :meth:`cursored`)."""
        path = f"/api/v1/groups/{group_id}/users"
        yield from self.cursored(path, {"limit": GROUP_MEMBERS_PAGE}, after)

    def log_page(self, url: str) -> tuple[list[dict[str, Any]], str | None]:
        """One page of System Log events and the ``next`` link to poll after it."""
        events, headers = self.request("GET", url)
        if not isinstance(events, list):
            raise OktaError("GET /api/v1/logs: expected a list")
        return events, _next_link(headers)

    def remove_member(self, group_id: str, user_id: str) -> None:
        self.request("DELETE", f"/api/v1/groups/{group_id}/users/{user_id}")


def logs_url(org_url: str, since: str, event_types: list[str]) -> str:
    """The first System Log polling URL: events since ``since``, of the given types."""
    expression = " or ".join(f'eventType eq "{t}"' for t in sorted(event_types))
    query = urlencode({"since": since, "filter": expression, "limit": LOGS_PAGE})
    return f"{org_url.rstrip('/')}/api/v1/logs?{query}"


def _next_link(headers: dict[str, Any]) -> str | None:
    for part in (headers.get("Link") or "").split(","):
        if 'rel="next"' in part:
            return part.split(";")[0].strip().strip("<>")
    return None


@contextmanager
def _https_check(*, disabled: bool) -> Iterator[None]:
    """The SDK's https check as ``disabled`` says, whatever the environment held, and the
    environment as it was afterwards. Serialised: the environment is the process's."""
    with _environment:
        saved = os.environ.get(_SDK_HTTPS_SWITCH)
        if disabled:
            os.environ[_SDK_HTTPS_SWITCH] = "true"
        else:
            os.environ.pop(_SDK_HTTPS_SWITCH, None)
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(_SDK_HTTPS_SWITCH, None)
            else:
                os.environ[_SDK_HTTPS_SWITCH] = saved


def _one_line(error: Exception) -> str:
    """The SDK's configuration errors (an "Errors:" heading, one per line, a link to its
    README; HTML-escaped) as one line."""
    lines = (line.strip() for line in html.unescape(str(error)).splitlines())
    return " ".join(
        line for line in lines if line and line != "Errors:" and not line.startswith("See http")
    )


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[-1] if "://" in url else url


def _describe(error: Exception, status: int | None) -> str:
    summary = getattr(error, "error_summary", None) or str(error)
    return f"HTTP {status}: {summary}" if status else summary


def from_settings(settings: Any) -> OktaClient:
    """The client the settings describe; :class:`OktaError` if they describe none."""
    if not settings.okta_org_url:
        raise OktaError("PROVISIONING_OKTA_ORG_URL is not set")
    key = settings.okta_private_key
    if key and not key.lstrip().startswith(("-----", "{")):
        try:
            with open(key) as handle:
                key = handle.read()
        except OSError as exc:
            raise OktaError(f"PROVISIONING_OKTA_PRIVATE_KEY: cannot read {key}: {exc}") from None
    scopes = SCOPES + (WRITE_SCOPES if settings.okta_writeback else [])
    return OktaClient(
        settings.okta_org_url,
        api_token=settings.okta_api_token,
        client_id=settings.okta_client_id,
        private_key=key,
        scopes=scopes,
        allow_http=settings.okta_allow_http,
    )
