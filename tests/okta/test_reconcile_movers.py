"""Reconciling movers: a person who stays entitled to a connector keeps the same live grant.

A move between two Okta groups that map to the same connector must not revoke
the grant when the old group is reconciled and grant it again when the new one
is: that would be a gap in access, a new grant id downstream, and the grant's
history (granted_at, last_used_at) restarted.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from provisioning.audit.log import Origin
from provisioning.audit.models import AuditEvent
from provisioning.connectors.models import Connector
from provisioning.database import Database
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
from provisioning.okta.reconcile import reconcile
from provisioning.people.lifecycle import create_group
from tests.okta.okta_server import OktaState
from tests.org import Org

USED = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)


def build_mappings(
    database: Database, origin: Origin, okta_groups: list[str], mappings: dict[int, dict[int, str]]
) -> None:
    """Our side: connectors c0..cN, and each Okta group mapped to its connectors at a level."""
    connectors = 1 + max((c for by in mappings.values() for c in by), default=0)
    with database.transaction() as session:
        org = Org(session, origin)
        made = [org.connector(f"c{n}") for n in range(connectors)]
        for g, okta_group in enumerate(okta_groups):
            group = create_group(session, origin, display_name=f"g{g}", external_id=okta_group)
            for c, level in mappings.get(g, {}).items():
                create_mapping(session, origin, group, made[c], level)


def live_grants(database: Database) -> dict[tuple[str, str], tuple[int, Any, Any]]:
    """(Okta user id, connector slug) -> (grant id, granted_at, last_used_at) of live grants."""
    with database.reader() as session:
        rows = session.execute(
            select(
                User.external_id,
                Connector.slug,
                Grant.id,
                Grant.granted_at,
                Grant.last_used_at,
            )
            .join(User, User.id == Grant.user_id)
            .join(Connector, Connector.id == Grant.connector_id)
            .where(Grant.revoked_at.is_(None))
        )
        return {(u, c): (i, at, used) for u, c, i, at, used in rows}


def grant_rows(database: Database) -> int:
    with database.reader() as session:
        return len(session.scalars(select(Grant.id)).all())


def mark_used(database: Database) -> None:
    with database.transaction() as session:
        session.execute(update(Grant).values(last_used_at=USED))


def test_a_mover_between_groups_of_one_connector_keeps_the_grant(database, origin, okta, client):
    state = okta.state
    # Groups are reconciled in order of Okta id: the group Ada leaves comes first.
    old = state.add_group("eng-old", okta_id="00g1old")
    new = state.add_group("eng-new", okta_id="00g2new")
    ada = state.add_user("ada@example.com")
    state.add_member(old["id"], ada["id"])
    build_mappings(database, origin, [old["id"], new["id"]], {0: {0: "read"}, 1: {0: "read"}})
    assert reconcile(database, client).status == "succeeded"
    mark_used(database)
    before = live_grants(database)
    assert set(before) == {(ada["id"], "c0")}

    # Ada moves teams in Okta; no hook arrives.
    state.remove_member(old["id"], ada["id"])
    state.add_member(new["id"], ada["id"])
    run = reconcile(database, client)

    assert run.status == "succeeded", run.error
    assert run.drift["missing"] == [[new["id"], ada["id"]]]
    assert run.drift["extra"] == [[old["id"], ada["id"]]]
    assert live_grants(database) == before  # same id, granted_at and last_used_at
    assert grant_rows(database) == 1  # nothing revoked and re-created
    with database.reader() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.source == "okta-sync")
        ).all()
    assert "grant.revoked" not in actions
    assert actions.count("membership.added") == 2 and actions.count("membership.removed") == 1


def test_a_mover_to_a_lower_level_keeps_the_grant_and_changes_its_level(
    database, origin, okta, client
):
    state = okta.state
    # The group Ada leaves sorts first, so it would be reconciled first.
    old, new = state.add_group("a", okta_id="00g0aaa"), state.add_group("b", okta_id="00g1bbb")
    ada = state.add_user("ada@example.com")
    state.add_member(old["id"], ada["id"])
    build_mappings(database, origin, [old["id"], new["id"]], {0: {0: "read_write"}, 1: {0: "read"}})
    reconcile(database, client)
    mark_used(database)
    ((grant_id, granted_at, _),) = live_grants(database).values()

    state.remove_member(old["id"], ada["id"])
    state.add_member(new["id"], ada["id"])
    assert reconcile(database, client).status == "succeeded"

    assert live_grants(database) == {(ada["id"], "c0"): (grant_id, granted_at, USED)}
    with database.reader() as session:
        assert session.scalar(select(Grant.access_level)) == "read"


def test_movers_revoke_nothing_so_they_never_engage_the_brake(database, origin, okta, client):
    from provisioning.entitlements.models import RevocationHold
    from provisioning.settings import load

    state = okta.state
    old = state.add_group("old", okta_id="00g1old")
    new = state.add_group("new", okta_id="00g2new")
    people = [state.add_user(f"p{n}@example.com")["id"] for n in range(8)]
    for person in people:
        state.add_member(old["id"], person)
    build_mappings(database, origin, [old["id"], new["id"]], {0: {0: "read"}, 1: {0: "read"}})
    reconcile(database, client)
    before = live_grants(database)
    for person in people:
        state.remove_member(old["id"], person)
        state.add_member(new["id"], person)
    limits = load(mass_revocation_share=0.10, mass_revocation_minimum=5)
    run = reconcile(database, client, settings=limits)  # 8 memberships removed, no access lost
    assert run.status == "succeeded" and len(run.drift["extra"]) == 8
    assert "revocations_held" not in run.counts
    assert live_grants(database) == before
    with database.reader() as session:
        assert session.scalar(select(RevocationHold)) is None


# -- for all moves ------------------------------------------------------------

GROUPS, CONNECTORS, PEOPLE = 4, 3, 4

mappings_st = st.dictionaries(
    st.integers(0, GROUPS - 1),
    st.dictionaries(
        st.integers(0, CONNECTORS - 1), st.sampled_from(["read", "read_write"]), min_size=1
    ),
    min_size=2,
)
memberships_st = st.lists(
    st.frozensets(st.integers(0, GROUPS - 1), max_size=GROUPS), min_size=PEOPLE, max_size=PEOPLE
)


def reset(state: OktaState) -> None:
    with state.lock:
        state.users.clear()
        state.groups.clear()
        state.members.clear()
        state.faults.clear()
        state.changed()


def entitled(mappings: dict[int, dict[int, str]], groups: frozenset[int]) -> set[str]:
    return {f"c{c}" for g in groups for c in mappings.get(g, {})}


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    mappings=mappings_st,
    before=memberships_st,
    moves=st.lists(memberships_st, min_size=1, max_size=2),
)
def test_no_grant_that_stays_justified_is_revoked_and_re_created(
    fresh_database, origin, okta, client, monkeypatch, mappings, before, moves
):
    # Small batches, so that runs span several transactions (a person is never split).
    monkeypatch.setattr("provisioning.okta.reconcile.MEMBERSHIP_BATCH", 2)
    database = fresh_database()
    state = okta.state
    reset(state)
    groups = [state.add_group(f"g{g}", okta_id=f"00g{g:017d}")["id"] for g in range(GROUPS)]
    people = [state.add_user(f"p{p}@example.com")["id"] for p in range(PEOPLE)]
    for person, joined in zip(people, before, strict=True):
        for g in joined:
            state.add_member(groups[g], person)
    build_mappings(database, origin, groups, mappings)
    assert reconcile(database, client).status == "succeeded"

    for after in moves:
        mark_used(database)
        held = live_grants(database)
        rows = grant_rows(database)
        for person, was, now in zip(people, before, after, strict=True):
            for g in was - now:
                state.remove_member(groups[g], person)
            for g in now - was:
                state.add_member(groups[g], person)
        run = reconcile(database, client)
        assert run.status == "succeeded", run.error

        wanted = {
            (person, connector)
            for person, joined in zip(people, after, strict=True)
            for connector in entitled(mappings, joined)
        }
        live = live_grants(database)
        assert set(live) == wanted
        kept = set(held) & wanted
        for key in kept:
            assert live[key] == held[key], key  # same grant id, granted_at, last_used_at
        # Every new grant row is for access the person did not hold before.
        assert grant_rows(database) - rows == len(wanted - set(held))
        before = after
