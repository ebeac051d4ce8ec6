"""Configuring targets: validated, audited, secrets never echoed."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.delivery.egress import Egress, EgressRefused
from provisioning.delivery.models import MessageState, OutboxMessage, Target, TargetKind


class TargetError(ValueError):
    """A target setting that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class CheckedUrl(str):
    """A target URL that passed :func:`check_url`: what creating or changing a target takes.

    Checking resolves the URL's host, which may take seconds: it is done before
    the transaction, so that no DNS lookup ever holds the writers' lock.
    """


def _checked(url: str) -> str:
    if not isinstance(url, CheckedUrl):
        raise TypeError("a target's URL goes through check_url before the transaction")
    return str(url)


def check_url(url: str, egress: Egress) -> CheckedUrl:
    """An absolute http(s) URL with a host, no credentials in it and no fragment, whose
    host the egress policy lets delivery connect to."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise TargetError("url", f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetError("url", "must be an http:// or https:// URL")
    if not parts.hostname:
        raise TargetError("url", "must name a host")
    if parts.username or parts.password:
        raise TargetError("url", "must not carry credentials; give them as the secret")
    if parts.fragment:
        raise TargetError("url", "must not have a #fragment")
    _ = port
    try:
        egress.check_url(url)
    except EgressRefused as exc:
        raise TargetError(
            "url",
            f"refused by the egress policy: {exc.reason}"
            " (internal networks are allowed by PROVISIONING_DELIVERY_ALLOWED_NETWORKS)",
        ) from None
    return CheckedUrl(url)


def connector_ids(session: Session, slugs: list[str] | None) -> list[int] | None:
    """The ids of the connectors named (None: every connector)."""
    if slugs is None:
        return None
    found = dict(
        session.execute(select(Connector.slug, Connector.id).where(Connector.slug.in_(slugs))).all()
    )
    unknown = sorted(set(slugs) - set(found))
    if unknown:
        raise TargetError("connectors", f"unknown connector(s): {', '.join(unknown)}")
    return sorted(found[slug] for slug in set(slugs))


def describe(session: Session, target: Target) -> dict[str, Any]:
    """What the audit log and the API show of a target: never its secret."""
    slugs = None
    if target.connector_ids is not None:
        slugs = sorted(
            session.scalars(select(Connector.slug).where(Connector.id.in_(target.connector_ids)))
        )
    return {
        "name": target.name,
        "kind": str(target.kind),
        "url": target.url,
        "connectors": slugs,
        "enabled": target.enabled,
        "max_attempts": target.max_attempts,
    }


def create(
    session: Session,
    origin: Origin,
    *,
    name: str,
    kind: TargetKind,
    url: CheckedUrl,
    secret: str,
    connectors: list[str] | None,
    max_attempts: int,
    enabled: bool = True,
) -> Target:
    if kind == TargetKind.CALLBACK:
        raise TargetError("kind", "the callback target is the service's own: webhook or scim")
    if session.scalar(select(Target.id).where(Target.name == name)) is not None:
        raise TargetError("name", f"a target named {name!r} exists")
    target = Target(
        name=name,
        kind=kind,
        url=_checked(url),
        secret=secret,
        connector_ids=connector_ids(session, connectors),
        enabled=enabled,
        max_attempts=max_attempts,
    )
    session.add(target)
    session.flush()
    record(
        session,
        origin,
        [Entry("target.created", "target", str(target.id), after=describe(session, target))],
    )
    return target


def update(session: Session, origin: Origin, target: Target, changes: dict[str, Any]) -> Target:
    """Apply ``changes`` (any of url - a :class:`CheckedUrl` -, secret, connectors, enabled,
    max_attempts, name)."""
    before = describe(session, target)
    if target.kind == TargetKind.CALLBACK:
        for key in ("url", "secret", "connectors"):
            if key in changes:
                raise TargetError(
                    key, f"the callback target's {key} is not set here (docs/authzen.md)"
                )
    if "name" in changes and changes["name"] != target.name:
        if session.scalar(select(Target.id).where(Target.name == changes["name"])) is not None:
            raise TargetError("name", f"a target named {changes['name']!r} exists")
        target.name = changes["name"]
    if "url" in changes:
        target.url = _checked(changes["url"])
    if "connectors" in changes:
        target.connector_ids = connector_ids(session, changes["connectors"])
    for key in ("secret", "enabled", "max_attempts"):
        if key in changes:
            setattr(target, key, changes[key])
    target.version += 1
    target.updated_at = utcnow()
    session.flush()
    after = describe(session, target)
    if "secret" in changes:
        after["secret"] = "rotated"
    record(
        session,
        origin,
        [Entry("target.updated", "target", str(target.id), before=before, after=after)],
    )
    return target


def delete(session: Session, origin: Origin, target: Target, *, discard: bool = False) -> None:
    """Remove a target; refused while messages are owed to it unless ``discard`` (audited)."""
    owed = session.scalar(
        select(func.count(OutboxMessage.id)).where(
            OutboxMessage.target_id == target.id, OutboxMessage.state != MessageState.DELIVERED
        )
    )
    if owed and not discard:
        raise TargetError(
            "discard_undelivered",
            f"{owed} message(s) are still owed to this target: disable it to pause delivery,"
            " or delete with discard_undelivered=true to drop them (audited)",
        )
    before = {**describe(session, target), "discarded_messages": owed}
    record(session, origin, [Entry("target.deleted", "target", str(target.id), before=before)])
    session.delete(target)
    session.flush()
