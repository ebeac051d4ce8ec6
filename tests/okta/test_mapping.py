"""Mapping an Okta group by its Okta id or name, through the real okta SDK over real HTTP.

The admin API and the command look the group up in the Okta-compatible server on
127.0.0.1, record it under its Okta id, bring its members in as reconciliation does,
and map it; a dry run says who would gain what and writes nothing. A group SCIM pushes
or an Okta event creates later, with the same Okta id, is the same group.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from provisioning.audit.log import Origin, Source
from provisioning.audit.models import AuditEvent
from provisioning.cli import main
from provisioning.entitlements.models import Grant, Mapping
from provisioning.identity.models import Group, Membership, MembershipSource, User
from provisioning.okta import groups as okta_groups
from provisioning.okta import inbox
from provisioning.people.lifecycle import create_group
from provisioning.settings import load
from provisioning.tokens import credentials
from provisioning.web.app import create_app
from tests.okta import payloads as p
from tests.okta.okta_server import TOKEN
from tests.org import Org, holders
from tests.rows import rows

HOOK_SECRET = "s3cret-hook"


class Admin:
    """The admin API (and SCIM, and the Okta hooks) of an app whose Okta org is ``okta``."""

    def __init__(self, database, okta_url: str | None, name: str = "admin") -> None:
        self.database = database
        okta: dict[str, Any] = {"okta_hook_secrets": HOOK_SECRET}
        if okta_url:
            okta.update(okta_org_url=okta_url, okta_api_token=TOKEN, okta_allow_http=True)
        app = create_app(load(database_url=database.url, **okta), database, background=False)
        self.http = app.test_client()
        with database.transaction() as session:
            scopes = [credentials.Scope.ADMIN_WRITE.value, credentials.Scope.ADMIN_READ.value]
            self.secret = credentials.create(session, name, scopes, Origin("t", Source.CLI))
            self.scim_secret = credentials.create(
                session, f"{name}-scim", ["scim:provision"], Origin("t", Source.CLI)
            )

    def map(self, dry_run: bool = False, **body: Any):
        body.setdefault("connector", "github")
        body.setdefault("access_level", "read")
        url = "/api/v1/mappings" + ("?dry_run=true" if dry_run else "")
        return self.http.post(url, json=body, headers={"Authorization": f"Bearer {self.secret}"})

    def scim_post(self, path: str, body: dict[str, Any]):
        return self.http.post(
            "/scim/v2" + path,
            data=json.dumps(body),
            headers={
                "Authorization": f"Bearer {self.scim_secret}",
                "Content-Type": "application/scim+json",
            },
        )

    def hook(self, *events: dict[str, Any]) -> None:
        answer = self.http.post(
            "/hooks/okta/events",
            data=p.body(*events),
            headers={"Authorization": HOOK_SECRET, "Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
        inbox.process_pending(self.database)


@pytest.fixture
def admin(database, okta, origin):
    with database.transaction() as session:
        Org(session, origin).connector("github")
    return Admin(database, okta.url)


def cli_env(database, okta) -> dict[str, str]:
    return {
        "DATABASE_URL": database.url,
        "PROVISIONING_OKTA_ORG_URL": okta.url,
        "PROVISIONING_OKTA_API_TOKEN": TOKEN,
        "PROVISIONING_OKTA_ALLOW_HTTP": "true",
    }


def actions(database) -> list[str]:
    with database.reader() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def groups_held(database) -> list[tuple[str, str | None]]:
    with database.reader() as session:
        return sorted(
            tuple(r) for r in session.execute(select(Group.display_name, Group.external_id))
        )


def an_org(okta, database, origin):
    """Okta's group "eng" with Ada (new to the directory) and Bob (held here already)."""
    eng = okta.state.add_group("eng")
    ada = okta.state.add_user("ada@example.com", name="Ada Lovelace")
    bob = okta.state.add_user("bob@example.com")
    for person in (ada, bob):
        okta.state.add_member(eng["id"], person["id"])
    with database.transaction() as session:
        Org(session, origin).user("bob@example.com", external_id=bob["id"])
    return eng, ada, bob


def test_map_by_okta_id_dry_run_then_commit(database, origin, okta, admin):
    eng, ada, bob = an_org(okta, database, origin)
    before = rows(database)
    events_before = len(actions(database))

    dry = admin.map(dry_run=True, okta_group=eng["id"])
    assert dry.status_code == 200, dry.get_json()
    result = dry.get_json()
    assert result["dry_run"] and result["mapping"] is None
    assert [(g["user_name"], g["connector"], g["reasons"]) for g in result["gain"]] == [
        ("ada@example.com", "github", ["mapping:new"]),
        ("bob@example.com", "github", ["mapping:new"]),
    ]
    assert result["okta_group"] == {
        "id": eng["id"],
        "name": "eng",
        "members": 2,
        "adopted": False,
        "people_added": ["ada@example.com"],
    }
    assert rows(database) == before  # the dry run wrote nothing

    done = admin.map(okta_group=eng["id"])
    assert done.status_code == 201, done.get_json()
    result = done.get_json()
    assert not result["dry_run"] and result["mapping"]["group"] == "eng"
    assert [g["user_name"] for g in result["gain"]] == ["ada@example.com", "bob@example.com"]
    assert result["gain"][0]["reasons"] == [f"mapping:{result['mapping']['id']}"]
    assert groups_held(database) == [("eng", eng["id"])]
    assert holders(database) == {ada["id"], bob["id"]}
    with database.reader() as session:
        ada_row = session.scalar(select(User).where(User.external_id == ada["id"]))
        assert (ada_row.user_name, ada_row.given_name) == ("ada@example.com", "Ada")
        sources = set(session.scalars(select(Membership.source)))
        assert sources == {MembershipSource.OKTA_SYNC}
        creators = {
            action: actor
            for action, actor in session.execute(
                select(AuditEvent.action, AuditEvent.actor)
                .where(AuditEvent.action.in_(["group.created", "mapping.created", "user.created"]))
                .order_by(AuditEvent.id)  # the latest of each: the mapping's, not an_org's
            )
        }
    assert creators == {
        "group.created": "admin",
        "mapping.created": "admin",
        "user.created": "okta-sync",
    }
    new_events = actions(database)[events_before:]
    created = ["group.created", "user.created", "mapping.created"]
    assert sorted(new_events) == sorted([*created, *["membership.added", "grant.created"] * 2])


def test_a_person_held_by_login_is_linked_not_added(database, origin, okta, admin):
    eng = okta.state.add_group("eng")
    cy = okta.state.add_user("cy@example.com")
    okta.state.add_member(eng["id"], cy["id"])
    with database.transaction() as session:
        Org(session, origin).user("CY@example.com")  # pushed before, without its Okta id
    result = admin.map(okta_group=eng["id"]).get_json()
    assert result["okta_group"]["people_added"] == []
    assert [g["user_name"] for g in result["gain"]] == ["CY@example.com"]
    with database.reader() as session:
        assert session.scalar(select(func.count(User.id))) == 1
        assert session.scalar(select(User.external_id)) == cy["id"]


def test_map_by_name_through_the_command(database, origin, okta):
    state = okta.state
    name = 'R&D "core" and ops'
    wanted = state.add_group(name)
    state.add_group("R&D")  # another name, not a match
    lin = state.add_user("lin@example.com")
    state.add_member(wanted["id"], lin["id"])
    with database.transaction() as session:
        Org(session, origin).connector("github")
    env = cli_env(database, okta)
    command = ["mappings", "add", "--okta-group", name, "--connector", "github", "--level", "read"]

    before = rows(database)
    dry = CliRunner().invoke(main, [*command, "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "lin@example.com gains github (read)" in dry.stdout
    assert "new person: lin@example.com" in dry.stdout
    assert "nothing written" in dry.stderr
    assert rows(database) == before

    done = CliRunner().invoke(main, [*command, "--json"], env=env)
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["okta_group"]["id"] == wanted["id"] and result["mapping"]["group"] == name
    assert groups_held(database) == [(name, wanted["id"])]
    assert holders(database) == {lin["id"]}


def test_an_exact_name_wins_over_one_differing_in_case(database, origin, okta, admin):
    okta.state.add_group("Eng")
    exact = okta.state.add_group("eng")
    answer = admin.map(okta_group="eng")
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["okta_group"]["id"] == exact["id"]


def test_an_ambiguous_name_is_a_conflict_naming_the_candidates(database, origin, okta, admin):
    first = okta.state.add_group("eng")
    second = okta.state.add_group("eng")
    before = rows(database)
    answer = admin.map(okta_group="eng")
    assert answer.status_code == 409
    problem = answer.get_json()
    assert answer.content_type == "application/problem+json"
    assert problem["type"].endswith("okta-group-ambiguous")
    assert sorted(c["id"] for c in problem["candidates"]) == sorted([first["id"], second["id"]])
    assert rows(database) == before
    # The command says the same, and lists them.
    command = ["mappings", "add", "--okta-group", "eng", "--connector", "github", "--level", "read"]
    result = CliRunner().invoke(main, command, env=cli_env(database, okta))
    assert result.exit_code == 1 and first["id"] in result.stderr and second["id"] in result.stderr
    assert rows(database) == before


@pytest.mark.parametrize("ref", ["00gnosuchgroup0000000", "no such group"])
def test_an_unknown_id_or_name_is_not_found(database, origin, okta, admin, ref):
    okta.state.add_group("eng")
    before = rows(database)
    answer = admin.map(okta_group=ref)
    assert answer.status_code == 404
    assert answer.get_json()["type"].endswith("okta-group-unknown")
    assert rows(database) == before


def test_okta_failing_mid_way_writes_nothing(database, origin, okta, admin):
    eng, ada, bob = an_org(okta, database, origin)
    before = rows(database)
    # The group is found; listing its members fails past the SDK's retries.
    okta.state.fail(f"/api/v1/groups/{eng['id']}/users", 503, times=5)
    answer = admin.map(okta_group=eng["id"])
    assert answer.status_code == 502
    assert "HTTP 503" in answer.get_json()["detail"]
    assert okta.state.requests[f"/api/v1/groups/{eng['id']}"] == 1
    assert rows(database) == before
    # A rate limit is waited out, as reconciliation waits it out.
    okta.state.faults.clear()
    okta.state.fail(f"/api/v1/groups/{eng['id']}/users", 429)
    answer = admin.map(okta_group=eng["id"])
    assert answer.status_code == 201, answer.get_json()
    assert holders(database) == {ada["id"], bob["id"]}


def test_refusals_ask_okta_nothing_or_write_nothing(database, origin, okta, admin):
    eng, _, _ = an_org(okta, database, origin)
    before = rows(database)
    answer = admin.map(okta_group=eng["id"], connector="nope")
    assert answer.status_code == 422 and okta.state.requests["total"] == 0
    both = admin.map(okta_group=eng["id"], group_id="2c8c7c6e-3c3b-4c55-8f77-3a8f4d0e7d11")
    assert both.status_code == 422
    assert rows(database) == before
    assert admin.map(okta_group=eng["id"]).status_code == 201
    again = rows(database)
    twice = admin.map(okta_group=eng["id"])
    assert twice.status_code == 422 and "already mapped" in twice.get_json()["detail"]
    assert rows(database) == again
    unconfigured = Admin(database, None, "no-okta").map(okta_group=eng["id"])
    assert unconfigured.status_code == 409
    assert unconfigured.get_json()["type"].endswith("okta-not-configured")


def test_a_group_scim_pushed_before_is_adopted_not_duplicated(database, origin, okta, admin):
    eng, ada, bob = an_org(okta, database, origin)
    with database.transaction() as session:
        pushed = create_group(session, origin, display_name="eng-old", external_id=eng["id"])
    answer = admin.map(okta_group=eng["id"])
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["okta_group"]["adopted"] is True
    assert answer.get_json()["mapping"]["group_id"] == str(pushed.id)
    assert groups_held(database) == [("eng", eng["id"])]  # renamed to Okta's name
    assert holders(database) == {ada["id"], bob["id"]}


def push_group(admin, name: str, **fields: Any) -> str:
    """A group pushed over SCIM (as Okta's push would, or a client without ``externalId``)."""
    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name}
    pushed = admin.scim_post("/Groups", {**body, **fields})
    assert pushed.status_code == 201, pushed.get_data(as_text=True)
    return pushed.get_json()["id"]


def test_a_group_pushed_without_external_id_is_adopted_by_its_name(database, origin, okta, admin):
    eng, ada, bob = an_org(okta, database, origin)
    with database.reader() as session:
        bob_id = session.scalar(select(User.id).where(User.external_id == bob["id"]))
    pushed = push_group(admin, "eng", members=[{"value": str(bob_id)}])
    other = push_group(admin, "eng-ops")
    answer = admin.map(okta_group=eng["id"])
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["okta_group"]["adopted"] is True
    assert answer.get_json()["mapping"]["group_id"] == pushed
    assert groups_held(database) == [("eng", eng["id"]), ("eng-ops", None)]
    assert holders(database) == {ada["id"], bob["id"]}
    with database.reader() as session:
        adoption = session.execute(
            select(
                AuditEvent.subject_id, AuditEvent.before, AuditEvent.after, AuditEvent.reason
            ).where(AuditEvent.action == "group.updated")
        ).one()
    assert adoption.subject_id == pushed and other != pushed
    assert (adoption.before, adoption.after) == ({"external_id": None}, {"external_id": eng["id"]})
    assert "adopted by its name 'eng'" in adoption.reason
    assert actions(database).count("group.created") == 2  # the two pushes; none by the map
    # Okta's later push, with the Okta id, is the same group.
    assert push_group(admin, "eng", externalId=eng["id"]) == pushed


def test_a_name_two_groups_without_external_id_share_adopts_neither(database, origin, okta, admin):
    eng, _, _ = an_org(okta, database, origin)
    first, second = push_group(admin, "eng"), push_group(admin, "eng")
    third = push_group(admin, "ENG")
    answer = admin.map(okta_group=eng["id"])
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["okta_group"]["adopted"] is False
    assert answer.get_json()["mapping"]["group_id"] not in (first, second, third)
    with database.reader() as session:
        named = session.execute(select(Group.id, Group.external_id)).all()
    assert {(str(i), e) for i, e in named} == {
        (first, None),
        (second, None),
        (third, None),
        (answer.get_json()["mapping"]["group_id"], eng["id"]),
    }
    assert "group.updated" not in actions(database)


def test_a_group_named_only_in_another_case_is_adopted(database, origin, okta, admin):
    eng, _, _ = an_org(okta, database, origin)
    pushed = push_group(admin, "ENG")
    push_group(admin, "eng", externalId="00gsomeoneelse")  # held with an IdP id: not it
    answer = admin.map(okta_group=eng["id"])
    assert answer.get_json()["mapping"]["group_id"] == pushed
    # Renamed to Okta's name, as a group held by its Okta id would be.
    assert set(groups_held(database)) == {("eng", "00gsomeoneelse"), ("eng", eng["id"])}


def test_a_later_scim_push_of_the_group_merges_into_it(database, origin, okta, admin):
    eng, ada, bob = an_org(okta, database, origin)
    mapped = admin.map(okta_group=eng["id"]).get_json()
    group_id = mapped["mapping"]["group_id"]
    with database.transaction() as session:
        cy = Org(session, origin).user("cy@example.com", external_id="00ucy")
    # Okta's group push: the same group, by its Okta id; created empty, or with members.
    pushed = admin.scim_post(
        "/Groups",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "eng",
            "externalId": eng["id"],
            "members": [{"value": str(cy.id)}],
        },
    )
    assert pushed.status_code == 201, pushed.get_data(as_text=True)
    assert pushed.get_json()["id"] == group_id
    assert groups_held(database) == [("eng", eng["id"])]
    # Those reconciliation brought in stay; the member pushed joins them.
    assert holders(database) == {ada["id"], bob["id"], "00ucy"}
    assert actions(database).count("group.created") == 1
    listed = admin.http.get(
        f"/scim/v2/Groups/{group_id}", headers={"Authorization": f"Bearer {admin.scim_secret}"}
    ).get_json()
    assert len(listed["members"]) == 3


def test_a_later_group_create_event_is_the_same_group(database, origin, okta, admin):
    eng, ada, bob = an_org(okta, database, origin)
    admin.map(okta_group=eng["id"])
    admin.hook(p.event("group.lifecycle.create", [p.group(eng["id"], "eng-renamed")], minute=1))
    assert groups_held(database) == [("eng-renamed", eng["id"])]
    assert actions(database).count("group.created") == 1
    assert holders(database) == {ada["id"], bob["id"]}
    with database.reader() as session:
        assert session.scalar(select(func.count(Mapping.id))) == 1
        assert session.scalar(select(func.count(Grant.id))) == 2


def test_reconcile_group_says_unmapped_or_unknown(database, origin, okta):
    eng = okta.state.add_group("eng")
    with database.transaction() as session:
        Org(session, origin).connector("github")
    env = cli_env(database, okta)
    unmapped = CliRunner().invoke(main, ["reconcile", "--group", eng["id"]], env=env)
    assert unmapped.exit_code == 0, unmapped.output
    assert f"group {eng['id']} (eng) is in Okta but not mapped" in unmapped.stderr
    assert f"provisioning mappings add --okta-group {eng['id']}" in unmapped.stderr
    unknown = CliRunner().invoke(
        main, ["reconcile", "--group", "00gnosuchgroup0000000", "--json"], env=env
    )
    assert unknown.exit_code == 1
    assert "Okta has no group 00gnosuchgroup0000000" in unknown.stderr
    summary = json.loads(unknown.stdout)
    assert summary["drift"]["unknown_groups"] == ["00gnosuchgroup0000000"]
    # Once mapped (the command it named), the same reconciliation reconciles it.
    command = ["mappings", "add", "--okta-group", eng["id"], "--connector", "github"]
    assert CliRunner().invoke(main, [*command, "--level", "read"], env=env).exit_code == 0
    again = CliRunner().invoke(main, ["reconcile", "--group", eng["id"], "--json"], env=env)
    assert again.exit_code == 0 and json.loads(again.stdout)["counts"]["groups"] == 1


# Names as Okta allows them: any printable text, quotes, backslashes, "and"/"or" included.
NAMES = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    lambda name: name.strip() == name and name
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=NAMES)
def test_any_name_finds_its_group_and_no_other(okta, client, name):
    """The name is sent quoted in Okta's search expression: whatever it holds, the one
    group of that name is found, not a group whose name it contains or begins."""
    okta.state.groups.clear()
    wanted = okta.state.add_group(name)
    okta.state.add_group(name + " and more")
    okta.state.add_group('x" or profile.name pr or "')
    assert okta_groups.find(client, name)["id"] == wanted["id"]


def test_the_command_refuses_a_mapping_into_a_violation_unless_confirmed(database, origin, okta):
    """Lin (held here already) approves payments; a rule forbids that with github. Mapping
    the Okta group Lin is in to github lists Lin's violation on a dry run, is refused
    without --confirm-violations, and goes through with it and a --reason, audited."""
    from provisioning.entitlements.mappings import create_exception
    from tests.org import later

    eng = okta.state.add_group("eng")
    lin = okta.state.add_user("lin@example.com")
    okta.state.add_member(eng["id"], lin["id"])
    with database.transaction() as session:
        org = Org(session, origin)
        github, approve = org.connector("github"), org.connector("payments-approve")
        held = org.user("lin@example.com")
        create_exception(
            session, origin, held, approve, "read", justification="cfo", expires_at=later(9)
        )
        org.rule("no code for approvers", [approve], [github], "approvers stay out of the code")
    env = cli_env(database, okta)
    command = ["mappings", "add", "--okta-group", "eng", "--connector", "github", "--level", "read"]
    line = (
        "lin@example.com breaks rule 'no code for approvers': held payments-approve, gains github"
    )

    before = rows(database)
    dry = CliRunner().invoke(main, [*command, "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert line in dry.stdout
    assert "needs --confirm-violations" in dry.stderr
    assert rows(database) == before

    refused = CliRunner().invoke(main, command, env=env)
    assert refused.exit_code == 1, refused.output
    assert line in refused.stderr and "nothing was written" in refused.stderr
    assert rows(database) == before

    for bad in (
        ["--confirm-violations"],
        ["--reason", "why"],
        ["--confirm-violations", "--reason", " "],
    ):
        result = CliRunner().invoke(main, [*command, *bad], env=env)
        assert result.exit_code == 2, (bad, result.output)
        assert rows(database) == before

    done = CliRunner().invoke(
        main, [*command, "--confirm-violations", "--reason", "on call this week"], env=env
    )
    assert done.exit_code == 0, done.output
    assert line in done.stdout
    assert holders(database) == {lin["id"]}
    assert actions(database)[-2:] == ["separation.violated", "separation.accepted"]
