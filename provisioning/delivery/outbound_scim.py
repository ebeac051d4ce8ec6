"""Outbound SCIM targets (scim2-client): users, and one downstream group per connector.

How each event lands on the downstream server (RFC 7644):

- ``grant.created``: the user is found by ``externalId`` (our user id) or
  created, the connector's group is found by ``displayName`` (the connector's
  slug) or created, and the user is added with ``PATCH`` ``add`` ``members``;
- ``grant.revoked``: ``PATCH`` ``remove`` ``members[value eq "<id>"]``. A user
  or group the server does not have, a 404, or a ``noTarget`` answer mean the
  membership is already gone: success;
- ``user.offboarded`` / ``user.reinstated``: ``PATCH`` ``replace`` ``active``
  on the user, if the server has them;
- anything else (``grant.updated``, reminders): nothing to change downstream.

Downstream ids are remembered per process; a 404 on a remembered id forgets it.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx2
from pydantic import ValidationError
from scim2_client import (
    RequestNetworkException,
    SCIMClientException,
    UnexpectedStatusCodeException,
)
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import PatchOp, PatchOperation, SCIMException, SearchRequest

from provisioning.delivery import transport
from provisioning.delivery.egress import Egress
from provisioning.delivery.message import DeliveryFailed, Failure, Message

# A scimType is a keyword (RFC 7644 §3.12); anything else the peer sent is not kept.
_SCIM_TYPE = re.compile(r"^[A-Za-z]{1,40}$")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ScimSender:
    """Sends one target's events to its SCIM server; safe to share between threads."""

    def __init__(self, url: str, token: str, *, timeout: float, egress: Egress) -> None:
        self.url = url
        # scim2-client sends through this client: the egress policy holds for SCIM too.
        self._http = transport.client(
            egress, base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
        self._client: SyncSCIMClient | None = None
        self._users: dict[str, str] = {}
        self._groups: dict[str, str] = {}
        self._lock = threading.RLock()

    # -- plumbing ----------------------------------------------------------

    def _scim(self) -> SyncSCIMClient:
        with self._lock:
            if self._client is None:
                client = SyncSCIMClient(self._http)
                client.discover()
                self._client = client
            return self._client

    def _model(self, name: str) -> Any:
        model = self._scim().get_resource_model(name)
        if model is None:
            raise DeliveryFailed(f"the SCIM server at {self.url} offers no {name} resource")
        return model

    def _find(self, model: Any, filter_: str) -> str | None:
        found = self._scim().query(model, query_parameters=SearchRequest(filter=filter_))
        resources = found.resources or []
        return resources[0].id if resources else None

    def _patch(self, model: Any, id_: str, op: str, path: str, value: Any = None) -> None:
        operation = PatchOperation(op=op, path=path, value=value)
        self._scim().modify(model, id_, PatchOp[model](operations=[operation]))

    # -- downstream resources ----------------------------------------------

    def _user(self, person: dict[str, Any], *, create: bool) -> str | None:
        key = person["id"]
        if key in self._users:
            return self._users[key]
        model = self._model("User")
        remote = self._find(model, f"externalId eq {_quoted(key)}")
        if remote is None and create:
            email = person.get("email")
            created = self._scim().create(
                model(
                    user_name=person.get("userName") or key,
                    external_id=key,
                    display_name=person.get("displayName"),
                    emails=[{"value": email, "primary": True}] if email else None,
                    active=bool(person.get("active", True)),
                )
            )
            remote = created.id
        if remote is not None:
            self._users[key] = remote
        return remote

    def _group(self, slug: str, *, create: bool) -> str | None:
        with self._lock:  # two users' first grants of a connector must not make two groups
            if slug in self._groups:
                return self._groups[slug]
        model = self._model("Group")
        with self._lock:
            if slug in self._groups:
                return self._groups[slug]
            remote = self._find(model, f"displayName eq {_quoted(slug)}")
            if remote is None and create:
                remote = self._scim().create(model(display_name=slug, external_id=slug)).id
            if remote is not None:
                self._groups[slug] = remote
            return remote

    # -- events ------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Apply the event downstream; a failure says its status or kind, never the peer's text."""
        try:
            self._send(message)
        except SCIMException as exc:
            self._forget(message)
            scim_type = exc.scim_type if _SCIM_TYPE.match(exc.scim_type or "") else ""
            text = f"SCIM {exc.status} {scim_type}".rstrip()
            raise DeliveryFailed(Failure.HTTP_STATUS, text) from None
        except RequestNetworkException as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx2.HTTPError):
                raise transport.failure(cause) from None
            raise DeliveryFailed(Failure.NETWORK, type(exc).__name__) from None
        except UnexpectedStatusCodeException as exc:
            raise DeliveryFailed(Failure.HTTP_STATUS, str(exc)) from None
        except (SCIMClientException, ValidationError) as exc:
            raise DeliveryFailed(Failure.BAD_ANSWER, type(exc).__name__) from None
        except httpx2.HTTPError as exc:
            raise transport.failure(exc) from None

    def _send(self, message: Message) -> None:
        kind = message.event_type
        person = message.payload.get("user", {})
        if kind == "grant.created":
            user = self._user(person, create=True)
            group = self._group(message.payload["grant"]["connector"], create=True)
            self._patch(self._model("Group"), group, "add", "members", [{"value": user}])
        elif kind == "grant.revoked":
            user = self._user(person, create=False)
            group = self._group(message.payload["grant"]["connector"], create=False)
            if user is None or group is None:
                return
            try:
                self._patch(
                    self._model("Group"), group, "remove", f"members[value eq {_quoted(user)}]"
                )
            except SCIMException as exc:
                if exc.status == 404 or exc.scim_type == "noTarget":
                    return  # already gone
                raise
        elif kind in ("user.offboarded", "user.reinstated"):
            user = self._user(person, create=False)
            if user is None:
                return
            try:
                active = kind == "user.reinstated"
                self._patch(self._model("User"), user, "replace", "active", active)
            except SCIMException as exc:
                if exc.status == 404 and kind == "user.offboarded":
                    return  # nobody there to deactivate
                raise

    def _forget(self, message: Message) -> None:
        """Drop remembered ids of this message's resources (one may be gone downstream)."""
        with self._lock:
            self._users.pop(message.payload.get("user", {}).get("id"), None)
            grant = message.payload.get("grant")
            if grant:
                self._groups.pop(grant["connector"], None)

    def close(self) -> None:
        self._http.close()
