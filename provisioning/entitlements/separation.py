"""Separation of duties: rules of incompatible access, exemptions, and who would break them.

A :class:`~provisioning.entitlements.models.SeparationRule` says nobody holds
any connector of ``these`` together with any of ``those``. It is enforced:

- **before** a deliberate grant: :func:`provisioning.entitlements.mappings.check_grant`
  (every mapping, manual exception and access request passes it) asks
  :func:`first_conflict` whether any of the people who would receive the
  connector already hold one it is incompatible with, and refuses naming the
  rule; a live :class:`~provisioning.entitlements.models.SeparationExemption`
  (justified, approved, expiring) lets that one person through;
- **after** the fact: the stale-access scan reports every person holding both
  sides without a live exemption (:func:`violators`), a finding resolved when
  the violation goes or an exemption covers it.

Membership facts from the IdP are not refused (they are the IdP's): the engine
grants what they justify, but never silently: each grant it creates into a
violation is audited (``separation.violated``, from :func:`breaches`) and the
next scan opens its finding. The decision path evaluates no rule: nothing here
runs per call.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Subquery, exists, select
from sqlalchemy.orm import Session

from provisioning.audit.log import Entry, Origin, record
from provisioning.connectors.models import Connector
from provisioning.database import chunked, utcnow
from provisioning.entitlements.models import Grant, SeparationExemption, SeparationRule


class SeparationError(ValueError):
    """A rule or exemption that cannot be made as asked; nothing was changed."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Conflict:
    """Granting ``connector_id`` to ``user_id`` would break the rule ``rule_id``."""

    rule_id: int
    rule: str
    reason: str
    user_id: uuid.UUID
    connector_id: int

    def __str__(self) -> str:
        return (
            f"separation of duties: rule {self.rule!r} ({self.reason}) forbids user "
            f"{self.user_id} this connector with one they hold; an exemption may allow it"
        )


def _exempt(rule_id: Any, user_id: Any, now: dt.datetime) -> Any:
    return (
        exists()
        .where(
            SeparationExemption.rule_id == rule_id,
            SeparationExemption.user_id == user_id,
            SeparationExemption.expires_at > now,
        )
        .correlate_except(SeparationExemption)
    )


def _holding(rule: SeparationRule, other: list[int], users: Any, now: dt.datetime) -> Select:
    """Those of ``users`` holding a connector of ``other`` (a side of ``rule``), unexempt."""
    return select(Grant.user_id).where(
        Grant.revoked_at.is_(None),
        Grant.connector_id.in_(other),
        Grant.user_id.in_(users),
        ~_exempt(rule.id, Grant.user_id, now),
    )


def first_conflict(
    session: Session, connector_id: int, holders: Iterable[uuid.UUID] | Select
) -> Conflict | None:
    """The first rule granting ``connector_id`` to any of ``holders`` (ids, or a query of
    them) would break: one of them holds a connector of the rule's other side, unexempt."""
    now = utcnow()
    if not isinstance(holders, Select):
        holders = list(holders)
        if not holders:
            return None
    for rule in session.scalars(select(SeparationRule).order_by(SeparationRule.id)):
        if connector_id in rule.these:
            other = rule.those
        elif connector_id in rule.those:
            other = rule.these
        else:
            continue
        user_id = session.scalar(_holding(rule, other, holders, now).limit(1))
        if user_id is not None:
            return Conflict(rule.id, rule.name, rule.reason, user_id, connector_id)
    return None


def breaches(session: Session, created: Iterable[tuple[uuid.UUID, int]]) -> list[Conflict]:
    """The rules the grants just ``created`` (user, connector) break, unexempt: what the
    engine says aloud when facts it does not refuse (IdP memberships) grant into a
    violation. One query per rule a created connector is on, none without rules."""
    by_connector: dict[int, set[uuid.UUID]] = {}
    for user_id, connector_id in created:
        by_connector.setdefault(connector_id, set()).add(user_id)
    if not by_connector:
        return []
    now = utcnow()
    found: list[Conflict] = []
    for rule in session.scalars(select(SeparationRule).order_by(SeparationRule.id)):
        for side, other in ((rule.these, rule.those), (rule.those, rule.these)):
            for connector_id in set(side) & set(by_connector):
                for chunk in chunked(sorted(by_connector[connector_id])):
                    users = session.scalars(_holding(rule, other, chunk, now).distinct())
                    found += [
                        Conflict(rule.id, rule.name, rule.reason, user_id, connector_id)
                        for user_id in users
                    ]
    return found


def violation_sets(session: Session) -> Iterator[tuple[SeparationRule, Subquery]]:
    """Each rule with the query of the people breaking it (column ``user_id``): those
    holding both sides, unexempt (an intersection of two sets of live grants)."""
    now = utcnow()
    for rule in session.scalars(select(SeparationRule).order_by(SeparationRule.id)):
        side = [
            select(Grant.user_id).where(Grant.revoked_at.is_(None), Grant.connector_id.in_(ids))
            for ids in (rule.these, rule.those)
        ]
        both = side[0].intersect(side[1]).subquery()
        users = select(both.c.user_id).where(~_exempt(rule.id, both.c.user_id, now))
        yield rule, users.subquery()


def violators(session: Session) -> Iterator[tuple[SeparationRule, uuid.UUID]]:
    """Every (rule, person) where the person holds both sides of the rule, unexempt: one
    query per rule."""
    for rule, users in violation_sets(session):
        for (user_id,) in session.execute(select(users.c.user_id)):
            yield rule, user_id


def create_rule(
    session: Session,
    origin: Origin,
    *,
    name: str,
    these: list[Connector],
    those: list[Connector],
    owner: str,
    reason: str,
) -> SeparationRule:
    """A new rule of incompatible access (it applies to grants made from now on; the scan
    reports who already breaks it)."""
    if not these or not those:
        raise SeparationError("a rule names connectors on both sides", "these")
    ids_these, ids_those = sorted({c.id for c in these}), sorted({c.id for c in those})
    if set(ids_these) & set(ids_those):
        raise SeparationError("a connector cannot be incompatible with itself", "those")
    if session.scalar(select(SeparationRule.id).where(SeparationRule.name == name)) is not None:
        raise SeparationError(f"a rule named {name!r} exists", "name")
    rule = SeparationRule(
        name=name,
        these=ids_these,
        those=ids_those,
        owner=owner,
        reason=reason,
        created_by=origin.actor,
    )
    session.add(rule)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "separation_rule.created",
                "separation_rule",
                str(rule.id),
                reason=reason,
                after={"name": name, "these": ids_these, "those": ids_those, "owner": owner},
            )
        ],
    )
    return rule


def delete_rule(session: Session, origin: Origin, rule: SeparationRule) -> None:
    before = {"name": rule.name, "these": rule.these, "those": rule.those, "owner": rule.owner}
    session.delete(rule)
    session.flush()
    record(
        session,
        origin,
        [Entry("separation_rule.deleted", "separation_rule", str(rule.id), before=before)],
    )


def exempt(
    session: Session,
    origin: Origin,
    rule: SeparationRule,
    user_id: uuid.UUID,
    *,
    justification: str,
    expires_at: dt.datetime,
) -> SeparationExemption:
    """Let one person hold what ``rule`` forbids until ``expires_at`` (approved by the actor)."""
    if not justification or not justification.strip():
        raise SeparationError("an exemption needs a justification", "justification")
    if expires_at <= utcnow():
        raise SeparationError("an exemption needs an expiry in the future", "expires_at")
    exemption = SeparationExemption(
        rule_id=rule.id,
        user_id=user_id,
        justification=justification.strip(),
        approved_by=origin.actor,
        expires_at=expires_at,
    )
    session.add(exemption)
    session.flush()
    record(
        session,
        origin,
        [
            Entry(
                "separation_exemption.created",
                "separation_rule",
                str(rule.id),
                user_id=user_id,
                reason=exemption.justification,
                after={"rule": rule.name, "expires_at": expires_at},
            )
        ],
    )
    return exemption
