"""The initial Okta import through the okta SDK over HTTP: pages, checkpoints, resumption."""

from __future__ import annotations

import json
import math
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.cli import main
from provisioning.entitlements.models import Grant
from provisioning.identity.models import Group, Membership, User
from provisioning.okta import client as okta_client
from provisioning.okta.imports import import_directory, open_import, total_pages
from provisioning.okta.models import ImportGroup, SyncRun
from provisioning.people.lifecycle import create_group
from tests.okta.okta_server import TOKEN
from tests.org import holders, mapped_okta_group

PAGE = 2  # members per page, so that a few people make several pages


@pytest.fixture(autouse=True)
def small_pages(monkeypatch):
    monkeypatch.setattr(okta_client, "GROUP_MEMBERS_PAGE", PAGE)


def org(okta, database, origin) -> dict:
    """Three mapped groups (5, 3 and 0 members; two people in two groups) and one group
    nobody mapped; one person whose login breaks the text rules."""
    state = okta.state
    groups = [state.add_group(name, okta_id=f"00g{i}{name}") for i, name in enumerate("abc")]
    people = [state.add_user(f"p{n}@example.com", okta_id=f"00u{n:03d}") for n in range(7)]
    odd = state.add_user("\u0130" * 200, okta_id="00u999")
    for person in [*people[:4], odd]:
        state.add_member(groups[0]["id"], person["id"])
    for person in people[3:6]:
        state.add_member(groups[1]["id"], person["id"])
    unmapped = state.add_group("unmapped", okta_id="00g9unmapped")
    state.add_member(unmapped["id"], people[6]["id"])
    for group in groups:
        mapped_okta_group(database, origin, group["id"], f"c-{group['profile']['name']}")
    members = {g["id"]: len(state.members[g["id"]]) for g in groups}
    return {
        "people": {p["id"] for p in people[:6]},  # the odd one is refused
        "memberships": 7,
        "minimum_pages": sum(max(1, math.ceil(m / PAGE)) for m in members.values()),
    }


def tally(database) -> dict[str, int]:
    """Rows and audit events an import writes."""
    with database.reader() as session:

        def count(*where, model=AuditEvent):
            return session.scalar(select(func.count()).select_from(model).where(*where))

        return {
            "users": count(model=User),
            "groups": count(model=Group),
            "memberships": count(Membership.present.is_(True), model=Membership),
            "grants": count(model=Grant),
            "runs": count(model=SyncRun),
            "checkpoints": count(model=ImportGroup),
            "audit": count(),
            "user.created": count(AuditEvent.action == "user.created"),
            "membership.added": count(AuditEvent.action == "membership.added"),
            "grant.created": count(AuditEvent.action == "grant.created"),
        }


def test_import_brings_in_mapped_groups_members_in_the_minimum_of_pages(
    database, origin, okta, client
):
    expected = org(okta, database, origin)
    before = tally(database)
    summary = import_directory(database, client, batch=3)
    assert summary.status == "succeeded", summary.error
    assert holders(database) == expected["people"]
    after = tally(database)
    assert after["users"] - before["users"] == len(expected["people"])
    assert after["user.created"] - before["user.created"] == len(expected["people"])
    assert after["memberships"] - before["memberships"] == expected["memberships"]
    assert after["membership.added"] - before["membership.added"] == expected["memberships"]
    assert after["grant.created"] - before["grant.created"] == expected["memberships"]
    # One request per page: nothing fetched twice, nothing but members' pages.
    assert summary.requests == expected["minimum_pages"] == okta.state.requests["total"]
    assert summary.counts["pages"] == expected["minimum_pages"]
    assert summary.counts["people_created"] == len(expected["people"])
    assert summary.counts["people_refused"] == 1
    assert summary.counts["memberships_changed"] == expected["memberships"]
    assert open_import(database) is None
    # Importing again finds everything in place: no row, no audit event.
    again = import_directory(database, client)
    assert again.status == "succeeded" and again.counts["people_created"] == 0
    assert {k: v for k, v in tally(database).items() if k not in ("runs", "checkpoints")} == {
        k: v for k, v in after.items() if k not in ("runs", "checkpoints")
    }


def test_an_import_interrupted_by_okta_resumes_without_duplicates(database, origin, okta, client):
    expected = org(okta, database, origin)
    before = tally(database)
    okta.state.fail("/api/v1/groups/", 500, skip=2)  # the third page fails
    failed = import_directory(database, client, batch=1)
    assert failed.status == "failed" and "HTTP 500" in failed.error
    middle = tally(database)
    # What was committed is whole: every row with its audit event, its checkpoint moved on.
    assert 0 < middle["users"] - before["users"] < len(expected["people"])
    assert middle["users"] - before["users"] == middle["user.created"] - before["user.created"]
    assert (
        middle["memberships"] - before["memberships"]
        == middle["membership.added"] - before["membership.added"]
    )
    import_id = open_import(database)
    assert import_id == failed.import_id and total_pages(database, import_id) == 2
    with database.reader() as session:
        run = session.get(SyncRun, failed.run_id)
    assert run.status == "failed" and run.kind == "import"

    resumed = import_directory(database, client, batch=1)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.mode == "resume" and resumed.import_id == import_id
    after = tally(database)
    for name in ("users", "user.created"):
        assert after[name] - before[name] == len(expected["people"])
    for name in ("memberships", "membership.added", "grant.created"):
        assert after[name] - before[name] == expected["memberships"]
    assert holders(database) == expected["people"]
    # No committed page fetched again: the minimum, and the one request that failed.
    assert okta.state.requests["total"] == expected["minimum_pages"] + 1
    assert total_pages(database, import_id) == expected["minimum_pages"]
    assert open_import(database) is None


def test_a_dry_run_writes_nothing_and_says_what_it_would_create(database, origin, okta, client):
    expected = org(okta, database, origin)
    before = tally(database)
    summary = import_directory(database, client, dry_run=True, all_groups=True)
    assert summary.status == "succeeded", summary.error
    assert tally(database) == before
    assert summary.run_id is None and summary.counts["groups_created"] == 1  # "unmapped"
    assert summary.counts["people_created"] == len(expected["people"]) + 1  # and p6
    assert summary.counts["people_refused"] == 1
    assert summary.counts["memberships_changed"] == expected["memberships"] + 1
    # The import then creates what the dry run said.
    done = import_directory(database, client, all_groups=True)
    assert done.status == "succeeded", done.error
    for name in ("groups_created", "people_created", "memberships_changed"):
        assert done.counts[name] == summary.counts[name]


def test_an_import_of_all_groups_adopts_a_group_pushed_without_an_okta_id(
    database, origin, okta, client
):
    """A group SCIM pushed without ``externalId`` is the Okta group of its name (exactly,
    else differing only in case), as mapping by Okta id finds it: given the Okta id, its
    members added, no second group made; the dry run says so first."""
    org(okta, database, origin)
    with database.transaction() as session:
        pushed = create_group(session, origin, display_name="UNMAPPED").id
        ambiguous = [create_group(session, origin, display_name="twice").id for _ in range(2)]
    twice = okta.state.add_group("twice", okta_id="00g8twice")
    groups_before = tally(database)["groups"]
    dry = import_directory(database, client, dry_run=True, all_groups=True)
    assert dry.status == "succeeded", dry.error
    assert (dry.counts["groups_adopted"], dry.counts["groups_created"]) == (1, 1)
    done = import_directory(database, client, all_groups=True)
    assert done.status == "succeeded", done.error
    assert (done.counts["groups_adopted"], done.counts["groups_created"]) == (1, 1)
    with database.reader() as session:
        held = dict(session.execute(select(Group.id, Group.external_id)).all())
        members = session.scalar(
            select(func.count()).where(Membership.group_id == pushed, Membership.present)
        )
        adoption = session.scalar(
            select(AuditEvent.reason).where(
                AuditEvent.action == "group.updated", AuditEvent.subject_id == str(pushed)
            )
        )
    assert held[pushed] == "00g9unmapped" and members == 1
    assert "adopted by its name" in adoption
    # Two groups of one name: neither is adopted, the Okta group is made anew.
    assert [held[g] for g in ambiguous] == [None, None]
    assert list(held.values()).count(twice["id"]) == 1
    assert tally(database)["groups"] == groups_before + 1


def test_the_rate_limit_is_waited_for(database, origin, okta, client):
    expected = org(okta, database, origin)
    okta.state.fail("/api/v1/groups/", 429, skip=1)
    started = time.monotonic()
    summary = import_directory(database, client)
    assert summary.status == "succeeded", summary.error
    assert time.monotonic() - started >= 1  # waited for the window to reset
    assert okta.state.requests["total"] == expected["minimum_pages"] + 1  # one retry
    assert holders(database) == expected["people"]


def test_cli_imports_groups_matching_a_filter(database, origin, okta):
    state = okta.state
    eng, _ = state.add_group("Engineering"), state.add_group("Sales")
    ada = state.add_user("ada@example.com")
    state.add_member(eng["id"], ada["id"])
    env = {
        "DATABASE_URL": database.url,
        "PROVISIONING_OKTA_ORG_URL": okta.url,
        "PROVISIONING_OKTA_API_TOKEN": TOKEN,
        "PROVISIONING_OKTA_ALLOW_HTTP": "true",
    }
    args = ["okta", "import", "--group-filter", 'profile.name sw "eng"']
    dry = CliRunner().invoke(main, [*args, "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.stderr
    assert json.loads(dry.stdout)["counts"]["groups_created"] == 1
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.stderr
    assert "groups 1 (created 1); people created 1" in result.stdout
    assert "memberships added 1" in result.stdout
    with database.reader() as session:
        group = session.scalar(select(Group).where(Group.external_id == eng["id"]))
        assert group.display_name == "Engineering"
        assert session.scalar(select(User.external_id)) == ada["id"]
    both = CliRunner().invoke(main, [*args, "--all-groups"], env=env)
    assert both.exit_code == 2
