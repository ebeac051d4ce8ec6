"""Separation of duties over actions: a rule's sides name connectors or their actions."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from provisioning.connectors.models import Action, Connector
from provisioning.entitlements import separation
from provisioning.entitlements.mappings import (
    SeparationConflict,
    create_exception,
    create_mapping,
)
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
from provisioning.oversight.models import Finding, FindingKind, FindingState
from provisioning.oversight.scan import scan
from tests.org import Org, later

ACTIONS = (
    ("list_pull_requests", "read", "always_allow"),
    ("open_pull_request", "write", "always_allow"),
    ("merge_pull_request", "write", "always_allow"),
)


def _action(session, connector, name) -> Action:
    return session.scalar(
        select(Action).where(Action.connector_id == connector.id, Action.name == name)
    )


def _give(session, origin, user, connector, actions=None, level="read_write", why="x"):
    """A manual exception of ``connector`` to ``user`` (``actions``: its subset or None)."""
    return create_exception(
        session,
        origin,
        user,
        connector,
        level,
        justification=why,
        expires_at=later(30),
        actions=actions,
    )


def _merge_rule(session, origin, github, name="two-person merge"):
    """Nobody both opens and merges pull requests on ``github``."""
    return separation.create_rule(
        session,
        origin,
        name=name,
        these=[_action(session, github, "open_pull_request")],
        those=[_action(session, github, "merge_pull_request")],
        owner="risk@example.com",
        reason="who writes a change never merges it",
    )


@pytest.fixture
def github(database, origin):
    """Ada may open pull requests on github (an exception listing only that action);
    a rule forbids opening and merging to the same person."""
    with database.transaction() as session:
        org = Org(session, origin)
        ada, bob = org.user("ada@example.com"), org.user("bob@example.com")
        github = org.connector("github", actions=ACTIONS)
        _give(session, origin, ada, github, ["open_pull_request"], why="author")
        rule = _merge_rule(session, origin, github)
        return {"ada": ada.id, "bob": bob.id, "github": github.id, "rule": rule.id}


def _live(session) -> set[tuple]:
    return set(
        session.execute(
            select(Grant.user_id, Grant.connector_id).where(Grant.revoked_at.is_(None))
        ).all()
    )


def test_a_grant_of_the_conflicting_action_is_refused(database, origin, github):
    with database.transaction() as session:
        ada, bob = session.get(User, github["ada"]), session.get(User, github["bob"])
        connector = session.get(Connector, github["github"])
        for actions in (["merge_pull_request"], None):
            with pytest.raises(SeparationConflict, match="two-person merge"):
                _give(session, origin, ada, connector, actions)
        # A grant giving both actions at once breaks it alone, even to someone holding nothing.
        with pytest.raises(SeparationConflict, match="two-person merge"):
            _give(session, origin, bob, connector)
        org = Org(session, origin)
        group = org.group("reviewers")
        org.join(ada, group)
        with pytest.raises(SeparationConflict, match="two-person merge"):
            create_mapping(session, origin, group, connector, "read_write")
        assert (bob.id, connector.id) not in _live(session)


def test_a_grant_without_the_conflicting_action_is_allowed(database, origin, github):
    with database.transaction() as session:
        ada, bob = session.get(User, github["ada"]), session.get(User, github["bob"])
        connector = session.get(Connector, github["github"])
        # Read access covers no write action; a subset without merge does not either.
        org = Org(session, origin)
        group = org.group("readers")
        org.join(ada, group)
        org.join(bob, group)
        create_mapping(session, origin, group, connector, "read")
        _give(session, origin, ada, connector, ["list_pull_requests", "open_pull_request"])
        _give(session, origin, bob, connector, ["merge_pull_request"], why="merger")
        assert (bob.id, connector.id) in _live(session)
        assert list(separation.violators(session)) == []
        assert scan(session)["separation_violation"]["opened"] == 0


def test_the_scan_finds_the_existing_holders_of_both_actions(database, origin, github):
    from provisioning.entitlements.models import SeparationRule

    with database.transaction() as session:
        ada = session.get(User, github["ada"])
        connector = session.get(Connector, github["github"])
        # Ada already also merges; a new rule over the two actions finds her (and only her).
        session.delete(session.get(SeparationRule, github["rule"]))
        _give(session, origin, ada, connector, ["merge_pull_request"], why="merger")
        rule = _merge_rule(session, origin, connector, "two-person merge again")
        assert [(r.id, u) for r, u in separation.violators(session)] == [(rule.id, ada.id)]
        assert scan(session)["separation_violation"]["opened"] == 1
        (subject,) = session.scalars(
            select(Finding.subject_id).where(
                Finding.kind == FindingKind.SEPARATION_VIOLATION,
                Finding.state == FindingState.OPEN,
            )
        ).all()
        assert subject == f"{rule.id}:{ada.id}"


def test_an_action_and_its_own_connector_are_never_two_sides(database, origin, github):
    with database.transaction() as session:
        connector = session.get(Connector, github["github"])
        merge = _action(session, connector, "merge_pull_request")
        for these, those in (([connector], [merge]), ([merge], [merge])):
            with pytest.raises(separation.SeparationError):
                separation.create_rule(
                    session, origin, name="x", these=these, those=those, owner="o", reason="r"
                )


def test_a_membership_granting_both_actions_is_audited_and_found(database, origin, github):
    """The IdP's fact is not refused. A grant it creates into an action-level violation
    (Carol's), and a new source widening a grant the person already had (Ada's), are said
    aloud (``separation.violated``) and their findings opened; the scan finds both."""
    from provisioning.audit.models import AuditEvent

    with database.transaction() as session:
        ada = session.get(User, github["ada"])
        connector = session.get(Connector, github["github"])
        org = Org(session, origin)
        carol = org.user("carol@example.com")
        maintainers = org.group("maintainers")
        create_mapping(session, origin, maintainers, connector, "read_write")
        org.join(carol, maintainers)
        org.join(ada, maintainers)
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "separation.violated")
        ).all()
        rule = str(github["rule"])
        assert [(e.user_id, e.subject_id) for e in events] == [(carol.id, rule), (ada.id, rule)]
        found = sorted((r.id, str(u)) for r, u in separation.violators(session))
        assert found == sorted((github["rule"], str(u)) for u in (ada.id, carol.id))
        assert scan(session)["separation_violation"] == {
            "opened": 0,
            "still_open": 2,
            "resolved": 0,
        }


def _violated(session) -> list[tuple]:
    from provisioning.audit.models import AuditEvent

    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "separation.violated").order_by(AuditEvent.id)
    ).all()
    return [(e.user_id, e.subject_id) for e in events]


def test_a_membership_widening_a_held_grant_into_a_violation_is_audited(database, origin, github):
    """Ada already holds github (an exception listing open_pull_request). A membership --
    the path SCIM and event hooks take -- adds a mapping of github at the same level with
    every action: no grant is created or changed, but she now merges too. The engine says
    so at once, and opens the finding the scan would; the next run says nothing again."""
    with database.transaction() as session:
        org = Org(session, origin)
        ada = session.get(User, github["ada"])
        maintainers = org.group("maintainers")
        create_mapping(
            session, origin, maintainers, session.get(Connector, github["github"]), "read_write"
        )
        assert _violated(session) == []
        diff = org.join(ada, maintainers)
        assert not diff.created and not diff.updated
        assert _violated(session) == [(ada.id, str(github["rule"]))]
        subject = f"{github['rule']}:{ada.id}"
        assert session.scalars(
            select(Finding.subject_id).where(
                Finding.kind == FindingKind.SEPARATION_VIOLATION,
                Finding.state == FindingState.OPEN,
            )
        ).all() == [subject]
        # Idempotent: another run, and the scan, say and open nothing more.
        from provisioning.entitlements import engine

        engine.apply(session, engine.Affected.users(ada.id), origin)
        assert len(_violated(session)) == 1
        assert scan(session)["separation_violation"]["opened"] == 0
        # Leaving resolves the finding; joining again is a new onset, said again.
        org.leave(ada, maintainers)
        assert session.scalar(select(Finding.state).where(Finding.subject_id == subject)) == (
            FindingState.RESOLVED
        )
        org.join(ada, maintainers)
        assert len(_violated(session)) == 2
