"""Microsoft Entra ID's SCIM client: its request shapes, quirks included, and their effects.

Shapes from Microsoft's "Develop and plan provisioning for a SCIM endpoint"
(learn.microsoft.com): capitalised ops, booleans sent as strings, path-less
replace with dotted or URN keys, emails[type eq "work"].value paths, the
manager as a bare id, member removal with a value list, DELETE /Users.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from provisioning.audit.models import AuditEvent
from provisioning.identity.models import Membership, User
from tests.scim.conftest import ENTERPRISE, GROUP_SCHEMA, USER_SCHEMA
from tests.scim.test_okta import live_grants, mapped_group


def entra_user(user_name: str) -> dict:
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "externalId": str(uuid.uuid4()),
        "userName": user_name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Jane Doe", "familyName": "Doe", "givenName": "Jane"},
        "roles": [],
    }


def row(scim, user_id: str) -> User:
    with scim.database.reader() as session:
        return session.get(User, uuid.UUID(user_id))


def test_create_and_patch_with_capitalised_ops_and_value_paths(scim):
    created = scim.post("/Users", entra_user("jane@contoso.example"))
    assert created.status_code == 201, created.get_json()
    user = created.get_json()
    assert user.get("roles") in (None, [])

    patched = scim.patch(
        f"/Users/{user['id']}",
        [
            {
                "op": "Replace",
                "path": 'emails[type eq "work"].value',
                "value": "jd@contoso.example",
            },
            {"op": "Replace", "path": "name.familyName", "value": "Dough"},
            {"op": "Add", "path": "title", "value": "Engineer"},
        ],
    )

    assert patched.status_code == 200, patched.get_json()
    body = patched.get_json()
    assert body["emails"] == [{"value": "jd@contoso.example", "type": "work", "primary": True}]
    assert body["title"] == "Engineer"
    stored = row(scim, user["id"])
    assert (stored.family_name, stored.email) == ("Dough", "jd@contoso.example")
    found = scim.get('/Users?filter=emails[type eq "work" and value co "@CONTOSO"]').get_json()
    assert [u["id"] for u in found["Resources"]] == [user["id"]]


def test_booleans_as_strings_disable_and_enable(scim):
    group_id, connector_id = mapped_group(scim)
    user = scim.post("/Users", entra_user("sam@contoso.example")).get_json()
    scim.patch(
        f"/Groups/{group_id}",
        [{"op": "Add", "path": "members", "value": [{"$ref": None, "value": user["id"]}]}],
    )
    assert live_grants(scim, user["id"]) == [connector_id]

    disabled = scim.patch(
        f"/Users/{user['id']}", [{"op": "Replace", "path": "active", "value": "False"}]
    )
    assert disabled.status_code == 200, disabled.get_json()
    assert disabled.get_json()["active"] is False
    assert live_grants(scim, user["id"]) == []

    enabled = scim.patch(f"/Users/{user['id']}", [{"op": "Replace", "value": {"active": "True"}}])
    assert enabled.status_code == 200, enabled.get_json()
    assert row(scim, user["id"]).active is True
    assert live_grants(scim, user["id"]) == [connector_id]


def test_path_less_replace_with_dotted_and_urn_keys(scim):
    user = scim.post("/Users", entra_user("kim@contoso.example")).get_json()

    patched = scim.patch(
        f"/Users/{user['id']}",
        [
            {
                "op": "Replace",
                "value": {
                    "displayName": "Kim Lee",
                    "name.givenName": "Kim",
                    "name.familyName": "Lee",
                    f"{ENTERPRISE}:employeeNumber": "E-7",
                    f"{ENTERPRISE}:department": "Research",
                },
            }
        ],
    )

    assert patched.status_code == 200, patched.get_json()
    stored = row(scim, user["id"])
    assert (stored.display_name, stored.given_name, stored.family_name) == ("Kim Lee", "Kim", "Lee")
    assert (stored.employee_number, stored.department) == ("E-7", "Research")
    assert patched.get_json()[ENTERPRISE] == {"employeeNumber": "E-7", "department": "Research"}
    assert patched.get_json()["name"]["formatted"] == "Jane Doe"


def test_manager_sent_as_a_bare_id(scim):
    boss = scim.post("/Users", entra_user("boss@contoso.example")).get_json()
    user = scim.post("/Users", entra_user("report@contoso.example")).get_json()

    patched = scim.patch(
        f"/Users/{user['id']}",
        [{"op": "Add", "path": f"{ENTERPRISE}:manager", "value": boss["id"]}],
    )

    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()[ENTERPRISE]["manager"]["value"] == boss["id"]
    assert row(scim, user["id"]).manager_id == boss["id"]


def test_member_removal_with_a_value_list_removes_only_those(scim):
    group = scim.post(
        "/Groups",
        {"schemas": [GROUP_SCHEMA], "externalId": str(uuid.uuid4()), "displayName": "Sales"},
    ).get_json()
    ids = [
        scim.post("/Users", entra_user(f"u{n}@contoso.example")).get_json()["id"] for n in range(3)
    ]
    scim.patch(
        f"/Groups/{group['id']}",
        [{"op": "Add", "path": "members", "value": [{"value": i} for i in ids]}],
    )

    removed = scim.patch(
        f"/Groups/{group['id']}",
        [{"op": "Remove", "path": "members", "value": [{"value": ids[0]}, {"value": ids[2]}]}],
    )

    assert removed.status_code == 200, removed.get_json()
    assert [m["value"] for m in removed.get_json()["members"]] == [ids[1]]
    with scim.database.reader() as session:
        present = session.scalars(
            select(Membership.user_id).where(
                Membership.group_id == uuid.UUID(group["id"]), Membership.present.is_(True)
            )
        ).all()
    assert [str(p) for p in present] == [ids[1]]


def test_delete_user(scim):
    user = scim.post("/Users", entra_user("gone@contoso.example")).get_json()
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    assert scim.get(f"/Users/{user['id']}").status_code == 404
    assert scim.delete(f"/Users/{user['id']}").status_code == 404
    with scim.database.reader() as session:
        assert session.scalar(select(AuditEvent).where(AuditEvent.action == "user.deleted"))
