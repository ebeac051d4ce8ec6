"""SCIM bulk requests (RFC 7644 section 3.7): each operation one unit of work, and its effects."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from provisioning.audit.models import AuditEvent
from provisioning.identity.models import Group, Membership, User
from tests.scim.conftest import (
    ENTERPRISE,
    GROUP_SCHEMA,
    PATCH_OP,
    SCIM_JSON,
    TOKEN_NAME,
    USER_SCHEMA,
    Scim,
    make_app,
    make_token,
    okta_user,
)
from tests.scim.test_bad_input import assert_error, rows
from tests.scim.test_okta import live_grants, mapped_group, members_pushed, scim_events

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"


def bulk(scim, operations, **fields):
    return scim.post("/Bulk", {"schemas": [BULK_REQUEST], "Operations": operations, **fields})


def outcomes(response) -> list[dict]:
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["schemas"] == [BULK_RESPONSE]
    return body["Operations"]


def statuses(response) -> list[str]:
    return [o["status"] for o in outcomes(response)]


def create_user(user_name: str, bulk_id: str | None = None) -> dict:
    operation = {"method": "POST", "path": "/Users", "data": okta_user(user_name)}
    operation["bulkId"] = bulk_id or uuid.uuid4().hex[:8]
    return operation


def create_group(name: str, members: list[str], bulk_id: str | None = None) -> dict:
    data = {
        "schemas": [GROUP_SCHEMA],
        "displayName": name,
        "members": [{"value": m} for m in members],
    }
    return {
        "method": "POST",
        "path": "/Groups",
        "bulkId": bulk_id or uuid.uuid4().hex[:8],
        "data": data,
    }


def patch(path: str, *operations: dict) -> dict:
    return {
        "method": "PATCH",
        "path": path,
        "data": {"schemas": [PATCH_OP], "Operations": list(operations)},
    }


def user_names(scim) -> list[str]:
    with scim.database.reader() as session:
        return sorted(
            session.scalars(select(User.user_name).where(User.deleted_at.is_(None))).all()
        )


def group_names(scim) -> list[str]:
    with scim.database.reader() as session:
        return sorted(session.scalars(select(Group.display_name)).all())


def members_of(scim, group_id: str) -> list[str]:
    with scim.database.reader() as session:
        return sorted(
            session.scalars(
                select(User.user_name)
                .join(Membership, Membership.user_id == User.id)
                .where(
                    Membership.group_id == uuid.UUID(group_id),
                    Membership.present.is_(True),
                )
            ).all()
        )


def actions(scim) -> list[str]:
    with scim.database.reader() as session:
        return [
            e.action
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.source == "scim").order_by(AuditEvent.id)
            )
        ]


def test_discovery_announces_bulk_with_the_body_limit_the_app_enforces(scim, database):
    assert scim.get("/ServiceProviderConfig").get_json()["bulk"] == {
        "supported": True,
        "maxOperations": 1000,
        "maxPayloadSize": 1_048_576,
    }
    secret = make_token(database, "small", ["scim:provision"])
    small = Scim(make_app(database, max_request_bytes=4096).test_client(), secret, database)
    assert small.get("/ServiceProviderConfig").get_json()["bulk"]["maxPayloadSize"] == 4096


def test_bulk_ids_link_new_users_into_new_and_mapped_groups_with_grants_and_audit(scim):
    mapped_id, connector_id = mapped_group(scim)
    response = bulk(
        scim,
        [
            # Referencing operations come first: the creations they need run before them.
            create_group("platform", ["bulkId:ada", "bulkId:linus"], bulk_id="platform"),
            patch(
                f"/Groups/{mapped_id}",
                {"op": "add", "path": "members", "value": [{"value": "bulkId:ada"}]},
            ),
            create_user("ada@example.com", bulk_id="ada"),
            create_user("linus@example.com", bulk_id="linus"),
        ],
    )

    results = outcomes(response)
    assert [r["status"] for r in results] == ["201", "200", "201", "201"]
    assert [r.get("bulkId") for r in results] == ["platform", None, "ada", "linus"]
    ada_id = results[2]["location"].rsplit("/", 1)[1]
    platform_id = results[0]["location"].rsplit("/", 1)[1]
    assert results[0]["location"].endswith(f"/scim/v2/Groups/{platform_id}")
    assert results[1]["location"].endswith(f"/scim/v2/Groups/{mapped_id}")
    assert all(r["version"] for r in results)

    assert user_names(scim) == ["ada@example.com", "linus@example.com"]
    assert members_of(scim, platform_id) == ["ada@example.com", "linus@example.com"]
    assert members_of(scim, mapped_id) == ["ada@example.com"]
    assert live_grants(scim, ada_id) == [connector_id]
    # Every write went through the directory and the engine, named after the token.
    bulk_actions = actions(scim)[1:]  # after the mapped group's own creation
    assert bulk_actions.count("user.created") == 2
    assert bulk_actions.count("group.created") == 1
    assert bulk_actions.count("membership.added") == 3
    assert bulk_actions.count("grant.created") == 1
    (grant,) = scim_events(scim, "grant.created")
    assert (grant.actor, grant.source) == (TOKEN_NAME, "scim")
    assert {e.actor for e in scim_events(scim, "membership.added")} == {TOKEN_NAME}
    # And the resources read back as the bulk left them.
    group = scim.get(f"/Groups/{platform_id}").get_json()
    assert {m["value"] for m in group["members"]} == {
        ada_id,
        results[3]["location"].rsplit("/", 1)[1],
    }


def test_a_failed_operation_rolls_back_only_itself(scim):
    existing = scim.post("/Users", okta_user("grace@example.com")).get_json()
    missing = str(uuid.uuid4())
    response = bulk(
        scim,
        [
            create_user("ada@example.com", bulk_id="ada"),
            # The group row is written before its members are checked: all of it goes.
            create_group("doomed", ["bulkId:ada", missing]),
            create_user("grace@example.com"),  # taken
            patch(f"/Users/{missing}", {"op": "replace", "path": "title", "value": "x"}),
            {"method": "DELETE", "path": f"/Users/{existing['id']}", "version": 'W/"999"'},
            create_group("kept", ["bulkId:ada"]),
            {"method": "DELETE", "path": f"/Users/{existing['id']}"},
        ],
    )

    results = outcomes(response)
    assert [r["status"] for r in results] == ["201", "400", "409", "404", "412", "201", "204"]
    assert results[1]["response"]["scimType"] == "invalidValue"
    assert missing in results[1]["response"]["detail"]
    assert results[2]["response"]["scimType"] == "uniqueness"
    assert "location" not in results[1] and "location" not in results[2]
    assert results[4]["location"].endswith(f"/Users/{existing['id']}")

    assert user_names(scim) == ["ada@example.com"]
    assert group_names(scim) == ["kept"]
    assert actions(scim).count("group.created") == 1
    assert actions(scim).count("user.created") == 2  # grace, before the bulk; ada
    assert actions(scim).count("user.deleted") == 1


def test_fail_on_errors_stops_after_that_many_errors(scim):
    scim.post("/Users", okta_user("taken@example.com"))
    operations = [
        create_user("one@example.com"),
        create_user("taken@example.com"),
        create_user("two@example.com"),
        create_user("taken@example.com"),
        create_user("three@example.com"),
    ]

    assert statuses(bulk(scim, operations, failOnErrors=1)) == ["201", "409"]
    assert user_names(scim) == ["one@example.com", "taken@example.com"]

    operations = [
        create_user("a@example.org"),
        create_user("taken@example.com"),
        create_user("two@example.com"),
        create_user("taken@example.com"),
        create_user("three@example.com"),
    ]
    assert statuses(bulk(scim, operations, failOnErrors=2)) == ["201", "409", "201", "409"]
    assert user_names(scim) == [
        "a@example.org",
        "one@example.com",
        "taken@example.com",
        "two@example.com",
    ]

    # Without failOnErrors every operation runs.
    assert statuses(bulk(scim, [create_user("taken@example.com"), create_user("z@x.org")])) == [
        "409",
        "201",
    ]


def test_a_bulk_id_whose_creation_failed_fails_the_operations_referencing_it(scim):
    scim.post("/Users", okta_user("taken@example.com"))
    before = rows(scim)
    response = bulk(
        scim,
        [
            create_user("taken@example.com", bulk_id="dup"),
            create_group("ops", ["bulkId:dup"]),
            patch("/Users/bulkId:dup", {"op": "replace", "path": "title", "value": "x"}),
            patch("/Users/bulkId:never", {"op": "replace", "path": "title", "value": "x"}),
        ],
    )

    results = outcomes(response)
    assert [r["status"] for r in results] == ["409", "409", "409", "409"]
    assert "dup" in results[1]["response"]["detail"]
    assert "never" in results[3]["response"]["detail"]
    assert rows(scim) == before


def test_operations_invalid_on_their_own_fail_alone(scim):
    response = bulk(
        scim,
        [
            {"method": "GET", "path": "/Users"},
            {"method": "POST", "bulkId": "p", "data": okta_user("nopath@example.com")},
            {"method": "POST", "path": "/Users", "data": okta_user("nobulkid@example.com")},
            {"method": "POST", "path": "/Me", "bulkId": "me", "data": okta_user("me@x.org")},
            {"method": "POST", "path": "/Widgets", "bulkId": "w", "data": {"schemas": ["x"]}},
            {"method": "POST", "path": "/Users", "bulkId": "u", "data": {"schemas": [USER_SCHEMA]}},
            "not an operation",
            create_user("ok@example.com"),
        ],
    )

    results = outcomes(response)
    # Each fails as the request alone would: /Widgets is 404, as GET /scim/v2/Widgets.
    assert [r["status"] for r in results] == ["400"] * 4 + ["404"] + ["400"] * 2 + ["201"]
    for result in results[:7]:
        assert result["response"]["detail"]
    assert user_names(scim) == ["ok@example.com"]


def test_client_shapes_accepted_alone_are_accepted_in_bulk(scim):
    group_id, _ = mapped_group(scim)
    ada, linus = members_pushed(scim, group_id, "ada@example.com", "linus@example.com")

    response = bulk(
        scim,
        [
            patch(
                f"/Groups/{group_id}",
                {"op": "Remove", "path": "members", "value": [{"value": ada["id"]}]},
            ),
            patch(f"/Users/{linus['id']}", {"op": "Replace", "path": "active", "value": "False"}),
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "grace",
                "data": okta_user(
                    "grace@example.com",
                    schemas=[USER_SCHEMA, ENTERPRISE],
                    **{ENTERPRISE: {"manager": {"value": ada["id"]}}},  # no $ref, as Okta
                ),
            },
        ],
    )

    assert statuses(response) == ["200", "200", "201"]
    grace = outcomes(response)[2]["location"].rsplit("/", 1)[1]
    assert scim.get(f"/Users/{grace}").get_json()[ENTERPRISE]["manager"]["value"] == ada["id"]
    assert members_of(scim, group_id) == ["linus@example.com"]  # only Ada was removed
    assert scim.get(f"/Users/{linus['id']}").get_json()["active"] is False
    assert live_grants(scim, linus["id"]) == []


def test_put_and_patch_honour_the_version_given(scim):
    user = scim.post("/Users", okta_user("ada@example.com")).get_json()
    version = user["meta"]["version"]
    replacement = okta_user("ada@example.com", title="Countess")

    response = bulk(
        scim,
        [
            {
                "method": "PUT",
                "path": f"/Users/{user['id']}",
                "version": 'W/"0"',
                "data": replacement,
            },
            {
                "method": "PUT",
                "path": f"/Users/{user['id']}",
                "version": version,
                "data": replacement,
            },
        ],
    )

    results = outcomes(response)
    assert [r["status"] for r in results] == ["412", "200"]
    assert results[1]["version"] != version
    assert scim.get(f"/Users/{user['id']}").get_json()["title"] == "Countess"


def test_too_many_operations_is_413_and_writes_nothing(scim):
    before = rows(scim)
    operations = [
        {
            "method": "POST",
            "path": "/Users",
            "bulkId": f"u{i}",
            "data": {"schemas": [USER_SCHEMA], "userName": f"u{i}"},
        }
        for i in range(1001)
    ]
    response = bulk(scim, operations)
    assert_error(response, 413, None, "maxOperations", "1000")
    assert rows(scim) == before


def test_payload_up_to_max_payload_size_is_read_and_larger_is_413(database):
    secret = make_token(database, "okta", ["scim:provision"])
    scim = Scim(make_app(database, max_request_bytes=4096).test_client(), secret, database)
    before = rows(scim)

    def body_of(size: int) -> str:
        data = {"schemas": [USER_SCHEMA], "userName": "ada@example.com", "title": ""}
        operation = {"method": "POST", "path": "/Users", "bulkId": "a", "data": data}
        document = {"schemas": [BULK_REQUEST], "Operations": [operation]}
        data["title"] = "x" * (size - len(json.dumps(document)))
        body = json.dumps(document)
        assert len(body) == size
        return body

    too_large = scim.post("/Bulk", data=body_of(4097))
    assert_error(too_large, 413, None, "4096")
    assert rows(scim) == before

    fits = scim.post("/Bulk", data=body_of(4096))
    assert [o["status"] for o in outcomes(fits)] == ["201"]
    assert user_names(scim) == ["ada@example.com"]


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [
        ("not json", "invalidSyntax"),
        ("[]", "invalidSyntax"),
        (json.dumps({"schemas": [BULK_REQUEST]}), "invalidValue"),
        (json.dumps({"schemas": [BULK_REQUEST], "Operations": "x"}), "invalidValue"),
        (
            json.dumps({"schemas": [PATCH_OP], "Operations": [create_user("a@example.com")]}),
            "invalidSyntax",
        ),
    ],
)
def test_malformed_bulk_bodies_are_400_and_write_nothing(scim, body, scim_type):
    before = rows(scim)
    assert_error(scim.post("/Bulk", data=body), 400, scim_type)
    assert rows(scim) == before


@pytest.mark.parametrize("fail_on_errors", [-1, "x", "1.5"])
def test_a_bad_fail_on_errors_is_400_and_writes_nothing(scim, fail_on_errors):
    before = rows(scim)
    response = bulk(scim, [create_user("ada@example.com")], failOnErrors=fail_on_errors)
    assert_error(response, 400, "invalidValue", "failOnErrors")
    assert rows(scim) == before


def test_a_body_that_is_not_json_is_415(scim):
    before = rows(scim)
    body = json.dumps({"schemas": [BULK_REQUEST], "Operations": [create_user("a@example.com")]})
    response = scim.post("/Bulk", data=body, headers={"Content-Type": "text/plain"})
    assert_error(response, 415, None)
    assert rows(scim) == before


def test_bulk_needs_the_provisioning_scope(scim, database):
    auditor = Scim(scim.client, make_token(database, "auditor", ["audit:read"]), database)
    before = rows(scim)
    operations = [create_user("ada@example.com")]
    document = {"schemas": [BULK_REQUEST], "Operations": operations}
    anonymous = scim.client.post("/scim/v2/Bulk", json=document)
    assert anonymous.status_code == 401
    assert bulk(auditor, operations).status_code == 403
    assert rows(scim) == before
    assert scim.post("/Bulk", document, headers={"Content-Type": SCIM_JSON}).status_code == 200
