"""Bearer-token authentication of /scim/v2 and discovery endpoints that tell the truth."""

from __future__ import annotations

import pytest

from provisioning.audit.log import Origin, Source
from provisioning.tokens import credentials
from tests.scim.conftest import (
    ENTERPRISE,
    ERROR_SCHEMA,
    PATCH_OP,
    Scim,
    make_app,
    make_token,
    okta_user,
)
from tests.scim.test_bad_input import rows


def assert_401(response) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="SCIM"'
    body = response.get_json()
    assert body["schemas"] == [ERROR_SCHEMA] and body["status"] == "401" and body["detail"]


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer prov_nope"]
)
def test_missing_or_bad_tokens_are_401_in_scim_form(scim, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in ("/Users", "/Groups", "/ServiceProviderConfig", "/Schemas", "/Users/x"):
        assert_401(scim.client.get("/scim/v2" + path, headers=headers))
    before = scim.audit_count()
    assert_401(scim.client.post("/scim/v2/Users", json=okta_user(), headers=headers))
    assert scim.audit_count() == before


def test_revoked_token_is_401(scim):
    with scim.database.transaction() as session:
        credentials.revoke(session, "okta-provisioning", Origin("test-admin", Source.CLI))
    assert_401(scim.get("/Users"))


def test_token_without_the_scim_scope_is_403(database):
    secret = make_token(database, "auditor", ["audit:read"])
    scim = Scim(make_app(database).test_client(), secret, database)
    response = scim.post("/Users", okta_user())
    assert response.status_code == 403
    assert "scim:provision" in response.get_json()["detail"]
    assert scim.get("/Users").status_code == 403


def test_service_provider_config_announces_what_is_supported(scim):
    config = scim.get("/ServiceProviderConfig").get_json()
    assert config["patch"] == {"supported": True}
    assert config["bulk"] == {"supported": True, "maxOperations": 1000, "maxPayloadSize": 1048576}
    assert config["filter"] == {"supported": True, "maxResults": 1000}
    assert config["changePassword"] == {"supported": False}
    assert config["sort"] == {"supported": True}
    assert config["etag"] == {"supported": True}
    assert config["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    assert config["pagination"]["index"] is True
    assert config["pagination"]["cursor"] is True
    # What is announced works: sorting, paging, ETags; what is not is refused.
    scim.post("/Users", okta_user("b@example.com"))
    scim.post("/Users", okta_user("a@example.com"))
    names = scim.get("/Users?sortBy=userName&sortOrder=descending").get_json()["Resources"]
    assert [u["userName"] for u in names] == ["b@example.com", "a@example.com"]
    assert scim.get("/Users?count=1").get_json()["itemsPerPage"] == 1
    assert scim.get(f"/Users/{names[0]['id']}").headers["ETag"] == names[0]["meta"]["version"]
    bulk = scim.post(
        "/Bulk",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": [{"method": "DELETE", "path": f"/Users/{names[1]['id']}"}],
        },
    )
    assert bulk.get_json()["Operations"][0]["status"] == "204"
    assert scim.get(f"/Users/{names[1]['id']}").status_code == 404


def test_resource_types_and_schemas(scim):
    types = {t["id"]: t for t in scim.get("/ResourceTypes").get_json()["Resources"]}
    assert set(types) == {"User", "Group"}
    assert types["User"]["endpoint"] == "/Users"
    assert types["User"]["schemaExtensions"] == [{"schema": ENTERPRISE, "required": False}]
    schemas = {s["id"]: s for s in scim.get("/Schemas").get_json()["Resources"]}
    assert set(schemas) == {
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:core:2.0:Group",
        ENTERPRISE,
    }
    user = {
        a["name"]: a for a in schemas["urn:ietf:params:scim:schemas:core:2.0:User"]["attributes"]
    }
    assert user["entitlements"]["mutability"] == "readOnly"
    assert user["groups"]["mutability"] == "readOnly"
    assert user["userName"]["uniqueness"] == "server"
    assert user["userName"]["caseExact"] is False
    enterprise = {a["name"] for a in schemas[ENTERPRISE]["attributes"]}
    assert {"employeeNumber", "department", "manager"} <= enterprise
    assert scim.get("/Schemas", query_string={"filter": 'id eq "x"'}).status_code == 403


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "POST"])
def test_me_is_not_implemented_for_provisioning_tokens(scim, method):
    """/Me aliases the authenticated subject's own resource (RFC 7644 section 3.11); SCIM
    clients authenticate with provisioning tokens, which are not users, so the service does
    not support it and answers 501 with a SCIM error, for every method, writing nothing."""
    scim.post("/Users", okta_user("okta-provisioning@example.com"))  # not the token's resource
    before = rows(scim)
    body = {
        "PUT": okta_user("me@example.com"),
        "POST": okta_user("me@example.com"),
        "PATCH": {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "path": "title", "value": "x"}],
        },
    }.get(method)

    response = scim.request(method, "/Me", body)

    assert response.status_code == 501
    error = response.get_json()
    assert error["schemas"] == [ERROR_SCHEMA] and error["status"] == "501"
    assert "/Me is not supported" in error["detail"] and "token" in error["detail"]
    assert "Location" not in response.headers
    assert rows(scim) == before
    # Authentication comes first: without a token, /Me is 401 like any endpoint.
    assert_401(scim.client.open("/scim/v2/Me", method=method))
