"""Mapping an Okta group the service may not hold yet: found by Okta id or name, adopted, mapped.

The group is looked up through the Okta API (the client reconciliation uses: its
authentication, retries and rate-limit pauses), by its Okta id, or by its exact name
through the groups API's ``search``; then its members are fetched. Everything is
fetched before anything is written, so an Okta failure writes nothing. In one
transaction the group is recorded under its Okta id (``externalId``, the key SCIM
and the event hooks use: :func:`provisioning.people.lifecycle.adopt_group`; a group
pushed over SCIM without one is found by its name when it is the only one), its
members are brought in as reconciliation brings them (the same plan and repairs,
source ``okta-sync``: :func:`provisioning.okta.reconcile.repair`), and the mapping is
created (:func:`provisioning.entitlements.mappings.create_mapping`). Run inside a
dry run (:func:`provisioning.entitlements.previews.preview`), the same steps say who
would gain what, people not yet in the directory included, and write nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning import text
from provisioning.audit.log import Origin
from provisioning.connectors.models import Connector
from provisioning.database import chunked, utcnow
from provisioning.entitlements import brake, engine
from provisioning.entitlements.mappings import Confirmation, create_mapping
from provisioning.entitlements.models import Mapping
from provisioning.identity.models import Group, User
from provisioning.okta import reconcile
from provisioning.okta.client import OktaClient, OktaError
from provisioning.people import lifecycle
from provisioning.settings import DEFAULTS, Settings

# The shape of an Okta group id ("00g" and letters or digits; 20 characters in a real org).
OKTA_GROUP_ID = re.compile(r"^00g[0-9A-Za-z]+$")
# Candidates named in an ambiguous lookup's answer, at most.
CANDIDATES = 20


class GroupLookupError(Exception):
    """The Okta group asked for cannot be told: none has that id or name, or several have
    the name. Nothing was written."""

    status = 404

    def __init__(self, message: str, candidates: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.candidates = candidates or []


class UnknownGroup(GroupLookupError):
    status = 404


class AmbiguousGroup(GroupLookupError):
    status = 409


def _name(group: dict[str, Any]) -> str:
    return str((group.get("profile") or {}).get("name") or "")


def _quoted(value: str) -> str:
    """``value`` as a string of an Okta filter expression."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def find(client: OktaClient, ref: str) -> dict[str, Any]:
    """Okta's record of the group ``ref`` names: by Okta id when it has the shape of one
    (and Okta knows it), else by name, exactly (or, when no name is exactly it, the one
    name differing only in case). :class:`UnknownGroup`, :class:`AmbiguousGroup`."""
    if OKTA_GROUP_ID.match(ref):
        try:
            return client.group(ref)
        except OktaError as exc:
            if exc.status != 404:
                raise
    found = [g for g in client.groups(search=f"profile.name eq {_quoted(ref)}") if g.get("id")]
    candidates = [g for g in found if _name(g) == ref] or [
        g for g in found if text.fold(_name(g)) == text.fold(ref)
    ]
    if not candidates:
        raise UnknownGroup(f"Okta has no group with the id or name {ref!r}")
    if len(candidates) > 1:
        listed = [{"id": g["id"], "name": _name(g)} for g in candidates[:CANDIDATES]]
        raise AmbiguousGroup(
            f"{len(candidates)} Okta groups are named {ref!r}: name one by its id "
            f"({', '.join(c['id'] for c in listed)})",
            listed,
        )
    return candidates[0]


@dataclass(frozen=True)
class Fetched:
    """An Okta group and its members, as Okta listed them at ``fetched_at``."""

    okta_id: str
    name: str
    members: dict[str, dict[str, Any]]
    fetched_at: dt.datetime


def fetch(client: OktaClient, ref: str) -> Fetched:
    """The group ``ref`` names (:func:`find`) and every member Okta lists for it.

    :class:`GroupLookupError` or :class:`~provisioning.okta.client.OktaError`; both
    before anything is written."""
    group = find(client, ref)
    fetched_at = utcnow()
    members = reconcile.members_of(client, group["id"])
    return Fetched(group["id"], _name(group) or group["id"], members, fetched_at)


@dataclass
class Mapped:
    """What mapping an Okta group did (or, in a dry run, would do)."""

    group: Group
    adopted: bool  # the group was held already (pushed over SCIM, created by a hook, mapped)
    mapping: Mapping
    diff: engine.Diff
    people_added: list[str] = field(default_factory=list)  # user names new to the directory
    members: int = 0


def map_group(
    session: Session,
    origin: Origin,
    fetched: Fetched,
    connector: Connector,
    access_level: str,
    *,
    actions: list[str] | None = None,
    policies: dict[str, str] | None = None,
    expires_at: dt.datetime | None = None,
    description: str | None = None,
    settings: Settings = DEFAULTS,
    confirmation: Confirmation | None = None,
) -> Mapped:
    """Record the fetched group, bring its members in, map it to ``connector``; in this
    transaction (a :class:`~provisioning.entitlements.mappings.MappingError` leaves
    nothing). Members first, so the mapping's one engine run grants them all; a held
    group's members Okta no longer lists are removed under the mass-revocation brake."""
    group, adopted = lifecycle.adopt_group(
        session, origin, external_id=fetched.okta_id, display_name=fetched.name, by_name=True
    )
    plan: reconcile.Plan = {}
    drift: dict[str, list] = {"missing": [], "extra": []}
    reconcile.plan_members(
        session, fetched.okta_id, group.id, fetched.members, fetched.fetched_at, drift, plan
    )
    held = _held(session, plan)
    with brake.applied(session, f"okta group {fetched.okta_id} mapped", settings):
        diff = reconcile.repair(session, plan)
    mapping, granted = create_mapping(
        session,
        origin,
        group,
        connector,
        access_level,
        actions=actions,
        policies=policies,
        expires_at=expires_at,
        description=description,
        confirmation=confirmation,
    )
    diff.extend(granted)
    people_added: list[str] = []
    for chunk in chunked(sorted(set(plan) - held)):
        people_added += session.scalars(
            select(User.user_name).where(User.external_id.in_(chunk), User.deleted_at.is_(None))
        )
    return Mapped(group, adopted, mapping, diff, sorted(people_added), len(fetched.members))


def _held(session: Session, plan: reconcile.Plan) -> set[str]:
    """The Okta ids of the plan's people the directory holds: by Okta id, or by login (whom
    reconciliation links rather than adds)."""
    logins = {}
    for okta_id, repairs in plan.items():
        member = next((r.member for r in repairs if r.member), None)
        login = ((member or {}).get("profile") or {}).get("login")
        if login and text.problem(login) is None:
            logins[text.fold(login)] = okta_id
    held: set[str] = set()
    live = User.deleted_at.is_(None)
    for chunk in chunked(sorted(plan)):
        held |= set(
            session.scalars(select(User.external_id).where(User.external_id.in_(chunk), live))
        )
    for chunk in chunked(sorted(logins)):
        keys = session.scalars(
            select(User.user_name_key).where(User.user_name_key.in_(chunk), live)
        )
        held |= {logins[key] for key in keys}
    return held
