"""Mapping between SCIM resources and the identity rows (users, groups, memberships, grants)."""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from typing import Any

from scim2_models import InvalidValueException, Meta, Resource

from provisioning import text
from provisioning.connectors.models import Connector
from provisioning.entitlements.models import Grant
from provisioning.identity.models import Group, User
from scim.resources import ENTERPRISE

# Attributes held in columns (or computed), never in the JSON document.
_USER_TOP = ("schemas", "id", "meta", "userName", "externalId", "displayName", "active")
_USER_COMPUTED = ("password", "groups", "entitlements")
_GROUP_TOP = ("schemas", "id", "meta", "displayName", "externalId", "members")
# Where a group keeps the ``display`` its client gave each member (not an attribute name).
MEMBER_DISPLAY = "_memberDisplay"


def version_tag(version: int) -> str:
    return f'W/"{version}"'


def parse_id(resource_id: str | None) -> uuid.UUID | None:
    """The row id of a SCIM id, or None when it cannot be one."""
    try:
        return uuid.UUID(str(resource_id))
    except ValueError:
        return None


@dataclass
class UserFields:
    """What a User resource says, split into directory fields and the unmodelled rest."""

    fields: dict[str, Any]
    extras: dict[str, Any] | None


def _document(resource: Resource[Any]) -> dict[str, Any]:
    return resource.model_dump(mode="json")


def user_fields(resource: Resource[Any]) -> UserFields:
    doc = _document(resource)
    extras = {k: v for k, v in doc.items() if k not in _USER_TOP + _USER_COMPUTED}
    name = dict(extras.pop("name", None) or {})
    given_name = name.pop("givenName", None)
    family_name = name.pop("familyName", None)
    if name:
        extras["name"] = name
    enterprise = dict(extras.pop(ENTERPRISE, None) or {})
    employee_number = enterprise.pop("employeeNumber", None)
    department = enterprise.pop("department", None)
    manager = dict(enterprise.pop("manager", None) or {})
    manager_id = manager.pop("value", None)
    manager.pop("displayName", None)  # read-only: derived, never stored
    if manager:
        enterprise["manager"] = manager
    if enterprise:
        extras[ENTERPRISE] = enterprise
    emails = extras.get("emails") or []
    primary = next((e for e in emails if e.get("primary")), emails[0] if emails else None)
    active = doc.get("active")
    if active is None:
        # The client left "active" out: the user may act (the domain needs a value), and the
        # resource keeps saying nothing about it; the JSON null remembers that.
        extras["active"] = None
    fields = {
        "user_name": doc.get("userName"),
        "external_id": doc.get("externalId"),
        "display_name": doc.get("displayName"),
        "given_name": given_name,
        "family_name": family_name,
        "email": primary.get("value") if primary else None,
        "employee_number": employee_number,
        "department": department,
        "manager_id": manager_id,
        "active": True if active is None else bool(active),
    }
    for name_, limit in (("user_name", 255), ("external_id", 255), ("display_name", 255)):
        value = fields[name_]
        if value is not None and len(value) > limit:
            raise InvalidValueException(detail=f"{name_} is longer than {limit} characters")
    try:  # the folded keys fit their columns (a key may be longer than its value)
        for name_ in User.KEYED:
            User.key_of(name_, fields[name_])
    except text.TextError as exc:
        raise InvalidValueException(detail=str(exc)) from None
    return UserFields(fields, extras or None)


@dataclass(frozen=True)
class Document:
    """A resource as the rows say it, before validation: its attributes and its meta's
    values (resource type, created, last modified, version).

    What a client is sent for a resource depends only on this, the base URL and the
    attributes asked for, so :attr:`key` can stand for the answer (see
    :class:`scim.answers.Answers`).
    """

    attributes: dict[str, Any]
    stamps: tuple[str, Any, Any, str]

    def resource(self, model: type[Resource[Any]]) -> Resource[Any]:
        """The validated resource (a new object each time: callers may change it)."""
        resource = model.model_validate(self.attributes)
        resource_type, created, last_modified, version = self.stamps
        resource.meta = Meta(
            resource_type=resource_type,
            created=created,
            last_modified=last_modified,
            version=version,
        )
        return resource

    @functools.cached_property
    def key(self) -> str:
        """Equal for two documents exactly when their attributes and meta are equal."""
        return json.dumps(
            [self.attributes, self.stamps], sort_keys=True, default=str, separators=(",", ":")
        )


def _stored(resource_type: str, row: User | Group, attributes: dict[str, Any]) -> Document:
    """The document of ``row``: its attributes, and the meta its columns give."""
    stamps = (resource_type, row.created_at, row.updated_at, version_tag(row.version))
    return Document(attributes, stamps)


def user_document(
    user: User,
    groups: list[Group],
    grants: list[tuple[Grant, Connector]],
    managers: dict[str, str] | None = None,
) -> Document:
    # A shallow copy is enough: nested values are replaced, never changed in place.
    doc: dict[str, Any] = dict(user.scim_attributes or {})
    doc["id"] = str(user.id)
    doc["userName"] = user.user_name
    if user.external_id is not None:
        doc["externalId"] = user.external_id
    if user.display_name is not None:
        doc["displayName"] = user.display_name
    unset = "active" in doc and doc.pop("active") is None
    if not unset or not user.active:
        doc["active"] = bool(user.active)
    name = dict(doc.get("name") or {})
    if user.given_name is not None:
        name["givenName"] = user.given_name
    if user.family_name is not None:
        name["familyName"] = user.family_name
    if name:
        doc["name"] = name
    enterprise = dict(doc.get(ENTERPRISE) or {})
    if user.employee_number is not None:
        enterprise["employeeNumber"] = user.employee_number
    if user.department is not None:
        enterprise["department"] = user.department
    if user.manager_id is not None:
        manager = dict(enterprise.get("manager") or {})
        manager["value"] = user.manager_id
        manager.setdefault("$ref", f"Users/{user.manager_id}")
        display = (managers or {}).get(user.manager_id)
        if display:
            manager["displayName"] = display
        enterprise["manager"] = manager
    if enterprise:
        doc[ENTERPRISE] = enterprise
    if groups:
        doc["groups"] = [
            {
                "value": str(g.id),
                "$ref": f"Groups/{g.id}",
                "display": g.display_name,
                "type": "direct",
            }
            for g in groups
        ]
    if grants:
        doc["entitlements"] = [
            {"value": c.slug, "display": c.name, "type": str(g.access_level)} for g, c in grants
        ]
    return _stored("User", user, doc)


@dataclass
class GroupFields:
    display_name: str
    external_id: str | None
    members: list[str]
    extras: dict[str, Any] | None


def group_fields(resource: Resource[Any]) -> GroupFields:
    doc = _document(resource)
    extras = {k: v for k, v in doc.items() if k not in _GROUP_TOP}
    display_name = doc.get("displayName")
    if not display_name:
        raise InvalidValueException(detail="a Group needs a displayName")
    if len(display_name) > 255:
        raise InvalidValueException(detail="displayName is longer than 255 characters")
    try:
        text.key(display_name, "displayName")
    except text.TextError as exc:
        raise InvalidValueException(detail=str(exc)) from None
    members = []
    displays = {}
    for member in doc.get("members") or []:
        if member.get("type") not in (None, "User"):
            raise InvalidValueException(
                detail=f"member {member.get('value')!r}: only users can be group members"
            )
        if member.get("value") is None:
            raise InvalidValueException(detail="a member needs a value (the user's id)")
        members.append(member["value"])
        if member.get("display") is not None:
            ident = parse_id(member["value"])
            displays[str(ident) if ident else member["value"]] = member["display"]
    if displays:
        extras[MEMBER_DISPLAY] = displays
    return GroupFields(
        display_name, doc.get("externalId"), list(dict.fromkeys(members)), extras or None
    )


def group_document(group: Group, members: list[uuid.UUID] | None) -> Document:
    doc: dict[str, Any] = dict(group.scim_attributes or {})
    displays = doc.pop(MEMBER_DISPLAY, None) or {}
    doc["id"] = str(group.id)
    doc["displayName"] = group.display_name
    if group.external_id is not None:
        doc["externalId"] = group.external_id
    if members:
        doc["members"] = [
            {
                "value": str(uid),
                "$ref": f"Users/{uid}",
                "type": "User",
                **({"display": displays[str(uid)]} if str(uid) in displays else {}),
            }
            for uid in members
        ]
    return _stored("Group", group, doc)
