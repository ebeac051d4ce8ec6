"""Okta's SCIM 2.0 client, request by request as Okta documents them, with their effects.

Shapes from Okta's "Okta and SCIM Version 2.0" reference (developer.okta.com,
okta-scim/guides/scim-20): user lookup by userName with startIndex/count,
create with externalId and a password, full PUT, deactivation by a path-less
replace, group push (create, path-less rename carrying the id, add members
with path "members", remove with members[value eq "id"], replace all), delete.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from provisioning.audit.log import Origin, Source
from provisioning.audit.models import AuditEvent
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity.models import Group, Membership, User
from tests.org import Org
from tests.scim.conftest import ENTERPRISE, GROUP_SCHEMA, TOKEN_NAME, USER_SCHEMA, okta_user

ADMIN = Origin("test-admin", Source.ADMIN)


def live_grants(scim, user_id: str) -> list[str]:
    with scim.database.reader() as session:
        rows = session.execute(
            select(Grant.connector_id).where(
                Grant.user_id == uuid.UUID(user_id), Grant.revoked_at.is_(None)
            )
        )
        return sorted(str(r[0]) for r in rows)


def scim_events(scim, action: str) -> list[AuditEvent]:
    with scim.database.reader() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def mapped_group(scim, name: str = "eng-platform", slug: str = "github"):
    """A group pushed by Okta, then mapped by an administrator to a connector."""
    created = scim.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": name, "members": []})
    assert created.status_code == 201, created.get_json()
    group_id = created.get_json()["id"]
    with scim.database.transaction() as session:
        connector = Org(session, ADMIN).connector(slug)
        group = session.get(Group, uuid.UUID(group_id))
        create_mapping(session, ADMIN, group, connector, "read_write")
        connector_id = str(connector.id)
    return group_id, connector_id


def members_pushed(scim, group_id: str, *user_names: str) -> list[dict]:
    """Users created by Okta, then added to the group as Okta adds members."""
    users = [scim.post("/Users", okta_user(name)).get_json() for name in user_names]
    added = scim.patch(
        f"/Groups/{group_id}",
        [
            {
                "op": "add",
                "path": "members",
                "value": [{"value": u["id"], "display": u["userName"]} for u in users],
            }
        ],
    )
    assert added.status_code == 200, added.get_json()
    return users


def test_lookup_then_create_stores_the_user_without_the_password(scim):
    lookup = scim.get(
        '/Users?filter=userName eq "isabella.lopez@example.com"&startIndex=1&count=100'
    )
    assert lookup.status_code == 200
    assert lookup.get_json()["totalResults"] == 0

    created = scim.post("/Users", okta_user(externalId="00ujl29u0le5T6Aj10h7"))

    assert created.status_code == 201
    body = created.get_json()
    assert body["externalId"] == "00ujl29u0le5T6Aj10h7"
    assert "password" not in body
    assert created.headers["Location"].endswith(f"/scim/v2/Users/{body['id']}")
    assert created.headers["ETag"] == body["meta"]["version"]
    with scim.database.reader() as session:
        user = session.get(User, uuid.UUID(body["id"]))
        assert user.user_name == "isabella.lopez@example.com"
        assert user.external_id == "00ujl29u0le5T6Aj10h7"
        assert (user.given_name, user.family_name) == ("Isabella", "Lopez")
        assert user.email == "isabella.lopez@example.com"
        assert user.scim_attributes == {
            "locale": "en-US",
            "emails": [{"value": "isabella.lopez@example.com", "type": "work", "primary": True}],
        }
        assert "1mz050nq" not in str(user.scim_attributes)
    (event,) = scim_events(scim, "user.created")
    assert (event.actor, event.source) == (TOKEN_NAME, "scim")

    again = scim.get(
        '/Users?filter=userName eq "Isabella.Lopez@EXAMPLE.com"&startIndex=1&count=100'
    )
    assert again.get_json()["totalResults"] == 1
    assert again.get_json()["Resources"][0]["id"] == body["id"]


@pytest.mark.parametrize(
    ("first", "clash", "named"),
    [
        # userName is unique without regard to case
        ({}, ("ADA@example.com", "00uother"), "ADA@example.com"),
        ({"externalId": "00uada"}, ("grace@example.com", "00uada"), "00uada"),
    ],
    ids=["userName in another case", "externalId"],
)
def test_a_taken_user_name_or_external_id_is_a_409_and_writes_nothing(scim, first, clash, named):
    assert scim.post("/Users", okta_user("ada@example.com", **first)).status_code == 201
    events = scim.audit_count()

    user_name, external_id = clash
    answer = scim.post("/Users", okta_user(user_name, externalId=external_id))

    assert answer.status_code == 409
    assert answer.get_json()["scimType"] == "uniqueness"
    assert named in answer.get_json()["detail"]
    assert scim.audit_count() == events
    assert scim.get("/Users").get_json()["totalResults"] == 1


def test_full_put_replaces_the_profile_and_keeps_unmodelled_attributes(scim):
    user = scim.post("/Users", okta_user("grace@example.com", title="Engineer")).get_json()
    replacement = okta_user(
        "grace.hopper@example.com",
        title="Rear Admiral",
        nickName="Amazing Grace",
        **{"schemas": [USER_SCHEMA, ENTERPRISE]},
    )
    replacement[ENTERPRISE] = {"employeeNumber": "1906", "department": "Navy"}
    replacement["id"] = user["id"]

    replaced = scim.put(f"/Users/{user['id']}", replacement)

    assert replaced.status_code == 200, replaced.get_json()
    body = replaced.get_json()
    assert body["userName"] == "grace.hopper@example.com"
    assert body["title"] == "Rear Admiral"
    assert body["nickName"] == "Amazing Grace"
    assert body[ENTERPRISE] == {"employeeNumber": "1906", "department": "Navy"}
    assert body["meta"]["version"] != user["meta"]["version"]
    with scim.database.reader() as session:
        row = session.get(User, uuid.UUID(user["id"]))
        assert (row.user_name, row.employee_number, row.department) == (
            "grace.hopper@example.com",
            "1906",
            "Navy",
        )
    (event,) = scim_events(scim, "user.updated")
    assert event.after["user_name"] == "grace.hopper@example.com"
    assert scim.get(f"/Users/{user['id']}").get_json() == body


def test_deactivation_by_path_less_replace_revokes_every_grant(scim):
    group_id, connector_id = mapped_group(scim)
    user = scim.post("/Users", okta_user("linus@example.com")).get_json()
    added = scim.patch(
        f"/Groups/{group_id}",
        [{"op": "add", "path": "members", "value": [{"value": user["id"], "display": "linus"}]}],
    )
    assert added.status_code == 200, added.get_json()
    assert live_grants(scim, user["id"]) == [connector_id]
    assert scim.get(f"/Users/{user['id']}").get_json()["entitlements"] == [
        {"value": "github", "display": "github", "type": "read_write"}
    ]

    deactivated = scim.patch(
        f"/Users/{user['id']}", [{"op": "replace", "value": {"active": False}}]
    )

    assert deactivated.status_code == 200
    assert deactivated.get_json()["active"] is False
    assert "entitlements" not in deactivated.get_json()
    assert live_grants(scim, user["id"]) == []
    (event,) = scim_events(scim, "user.deactivated")
    assert event.actor == TOKEN_NAME
    (revoked,) = scim_events(scim, "grant.revoked")
    assert revoked.source == "scim"
    # A disabled user is still found by filters, with active false.
    found = scim.get('/Users?filter=userName eq "linus@example.com"').get_json()
    assert found["Resources"][0]["active"] is False


def test_group_push_add_remove_and_replace_members_grant_and_revoke(scim):
    group_id, connector_id = mapped_group(scim)
    ada, bob = members_pushed(scim, group_id, "ada@example.com", "bob@example.com")
    assert live_grants(scim, ada["id"]) == [connector_id]
    assert live_grants(scim, bob["id"]) == [connector_id]

    removed = scim.patch(
        f"/Groups/{group_id}", [{"op": "remove", "path": f'members[value eq "{ada["id"]}"]'}]
    )
    assert removed.status_code == 200, removed.get_json()
    assert [m["value"] for m in removed.get_json()["members"]] == [bob["id"]]
    assert live_grants(scim, ada["id"]) == []
    assert live_grants(scim, bob["id"]) == [connector_id]

    replaced = scim.patch(
        f"/Groups/{group_id}",
        [{"op": "replace", "path": "members", "value": [{"value": ada["id"]}]}],
    )
    assert replaced.status_code == 200
    assert live_grants(scim, ada["id"]) == [connector_id]
    assert live_grants(scim, bob["id"]) == []
    with scim.database.reader() as session:
        present = session.scalars(
            select(Membership.user_id).where(
                Membership.group_id == uuid.UUID(group_id), Membership.present.is_(True)
            )
        ).all()
        assert [str(p) for p in present] == [ada["id"]]
    actions = [e.action for e in scim_events(scim, "membership.added")]
    actions += [e.action for e in scim_events(scim, "membership.removed")]
    assert sorted(actions).count("membership.added") == 3
    assert sorted(actions).count("membership.removed") == 2


def test_rename_by_path_less_replace_carrying_the_id(scim):
    group_id, _ = mapped_group(scim, "Test SCIMv2")
    before = scim.get(f"/Groups/{group_id}").get_json()

    renamed = scim.patch(
        f"/Groups/{group_id}",
        [{"op": "replace", "value": {"id": group_id, "displayName": "Test SCIMv2 renamed"}}],
    )

    assert renamed.status_code == 200, renamed.get_json()
    assert renamed.get_json()["displayName"] == "Test SCIMv2 renamed"
    assert renamed.get_json()["meta"]["version"] != before["meta"]["version"]
    (event,) = scim_events(scim, "group.renamed")
    assert event.after == {"display_name": "Test SCIMv2 renamed"}
    found = scim.get('/Groups?filter=displayName eq "test scimv2 RENAMED"').get_json()
    assert [g["id"] for g in found["Resources"]] == [group_id]


def test_delete_group_revokes_what_only_it_justified(scim):
    group_id, _ = mapped_group(scim)
    user = scim.post("/Users", okta_user("ken@example.com")).get_json()
    scim.patch(
        f"/Groups/{group_id}", [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]
    )
    assert live_grants(scim, user["id"])

    assert scim.delete(f"/Groups/{group_id}").status_code == 204

    assert scim.get(f"/Groups/{group_id}").status_code == 404
    assert live_grants(scim, user["id"]) == []
    assert scim.get(f"/Users/{user['id']}").get_json().get("groups") is None


def test_delete_user_revokes_keeps_history_and_answers_404_after(scim):
    group_id, _ = mapped_group(scim)
    user = scim.post("/Users", okta_user("dennis@example.com")).get_json()
    scim.patch(
        f"/Groups/{group_id}", [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]
    )

    assert scim.delete(f"/Users/{user['id']}").status_code == 204

    assert scim.get(f"/Users/{user['id']}").status_code == 404
    assert live_grants(scim, user["id"]) == []
    with scim.database.reader() as session:
        row = session.get(User, uuid.UUID(user["id"]))
        assert row is not None and row.deleted_at is not None
    assert scim_events(scim, "user.deleted")[0].actor == TOKEN_NAME
    members = scim.get(f"/Groups/{group_id}").get_json()
    assert "members" not in members
    # The userName is free again.
    assert scim.post("/Users", okta_user("dennis@example.com")).status_code == 201


def test_okta_import_pages_users_and_groups(scim):
    for n in range(5):
        scim.post("/Users", okta_user(f"user{n}@example.com", externalId=f"00u{n}"))
    first = scim.get("/Users?startIndex=1&count=2").get_json()
    last = scim.get("/Users?startIndex=5&count=2").get_json()
    assert (first["totalResults"], first["itemsPerPage"], first["startIndex"]) == (5, 2, 1)
    assert (last["itemsPerPage"], last["startIndex"]) == (1, 5)
    groups = scim.get("/Groups?startIndex=1&count=100").get_json()
    assert groups["totalResults"] == 0 and groups["Resources"] == []


def test_enterprise_manager_given_by_id_only(scim):
    boss = scim.post("/Users", okta_user("boss@example.com")).get_json()
    body = okta_user("report@example.com", schemas=[USER_SCHEMA, ENTERPRISE])
    body[ENTERPRISE] = {"manager": {"value": boss["id"], "displayName": "Boss"}}

    created = scim.post("/Users", body)

    assert created.status_code == 201, created.get_json()
    manager = created.get_json()[ENTERPRISE]["manager"]
    assert manager["value"] == boss["id"]
    assert manager["$ref"].endswith(f"/scim/v2/Users/{boss['id']}")
    with scim.database.reader() as session:
        assert session.get(User, uuid.UUID(created.get_json()["id"])).manager_id == boss["id"]
    found = scim.get(f'/Users?filter={ENTERPRISE}:manager.value eq "{boss["id"]}"').get_json()
    assert [u["id"] for u in found["Resources"]] == [created.get_json()["id"]]


def test_a_pushed_membership_widening_a_grant_into_a_violation_is_audited(scim):
    """Ada holds github for opening pull requests only (an exception); a rule forbids
    opening and merging to one person. Okta pushes her into a group mapped to all of
    github at the same level: no grant changes, but she may now merge -- the engine records
    ``separation.violated`` in the same request."""
    from provisioning.connectors.models import Action
    from provisioning.entitlements.mappings import create_exception
    from tests.org import later

    ada = scim.post("/Users", okta_user("ada.lovelace@example.com")).get_json()
    created = scim.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "maintainers"})
    group_id = created.get_json()["id"]
    with scim.database.transaction() as session:
        org = Org(session, ADMIN)
        github = org.connector(
            "github",
            actions=(
                ("open_pull_request", "write", "always_allow"),
                ("merge_pull_request", "write", "always_allow"),
            ),
        )
        user = session.get(User, uuid.UUID(ada["id"]))
        create_exception(
            session,
            ADMIN,
            user,
            github,
            "read_write",
            justification="author",
            expires_at=later(9),
            actions=["open_pull_request"],
        )
        named = {
            a.name: a
            for a in session.scalars(select(Action).where(Action.connector_id == github.id))
        }
        rule = org.rule(
            "two-person merge",
            [named["open_pull_request"]],
            [named["merge_pull_request"]],
            "who writes a change never merges it",
        )
        create_mapping(
            session, ADMIN, session.get(Group, uuid.UUID(group_id)), github, "read_write"
        )
        rule_id = str(rule.id)
    grants = live_grants(scim, ada["id"])
    added = scim.patch(
        f"/Groups/{group_id}",
        [{"op": "add", "path": "members", "value": [{"value": ada["id"]}]}],
    )
    assert added.status_code == 200, added.get_json()
    assert live_grants(scim, ada["id"]) == grants
    assert scim_events(scim, "grant.updated") == []
    (event,) = scim_events(scim, "separation.violated")
    assert (event.subject_id, str(event.user_id)) == (rule_id, ada["id"])
    assert event.after == {"rule": "two-person merge", "connector": "github"}
