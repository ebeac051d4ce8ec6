"""Client quirks: the request shapes Okta and Entra ID send that RFC 7644 does not, rewritten.

:func:`normalise` is called by :meth:`scim.service.ProvisioningService.read_body` on
every body scim2-server validates (creations, replacements, PATCH, bulk): scim2-server's
documented hook for reading a body, so no flow of scim2-server is copied here.
"""

from __future__ import annotations

import json
from typing import Any

from scim2_models import Context, InvalidValueException

from scim.resources import ENTERPRISE


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
