"""The OpenAPI 3.1 document, the offline docs page, and authentication on every documented route."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import make_app

ALL = [
    "admin:read",
    "admin:write",
    "offboarding:write",
    "decisions:check",
    "audit:read",
    "requests:write",
]


def operations(app):
    for path, item in app.api_doc["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


def concrete(path: str) -> str:
    values = {
        "slug": "github",
        "name": "search",
        "user_id": "00000000-0000-0000-0000-000000000001",
        "group_id": "00000000-0000-0000-0000-000000000002",
        "mapping_id": "1",
        "exception_id": "1",
        "finding_id": "1",
        "offboarding_id": "1",
        "target_id": "1",
        "hold_id": "1",
        "parked_id": "1",
        "review_id": "1",
        "item_id": "1",
        "request_id": "1",
        "task_id": "arq_1",
        "rule_id": "1",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def test_the_served_document_passes_the_openapi_specification_validator(api):
    """openapi-spec-validator, on the document as served: every schema is valid JSON
    Schema, and a field that may be left out but not sent as null has no ``default: null``."""
    from openapi_spec_validator import OpenAPIV31SpecValidator

    doc = api.client.get("/api/v1/openapi.json").json
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in OpenAPIV31SpecValidator(doc).iter_errors()
    ]
    assert errors == []
    name = doc["components"]["schemas"]["ConnectorPatch"]["properties"]["name"]
    assert "default" not in name and name["type"] == "string"  # null is refused: test_connectors


def test_document_is_openapi_3_1_generated_from_the_models(api):
    response = api.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    for name in ("ConnectorIn", "MappingIn", "MappingResult", "DecisionIn", "Problem"):
        assert name in schemas
    assert schemas["ConnectorIn"]["additionalProperties"] is False
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert len(list(operations(api.app))) >= 25


def test_docs_page_and_its_assets_are_served_by_us(api):
    page = api.client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:href|src)="([^"]+)"', html)
    assert assets and all(a.startswith("/api/v1/docs/assets/") for a in assets)
    for asset in assets:
        response = api.client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.get_data()) > 1000
        response.close()
    assert "/api/v1/openapi.json" in html


def test_every_documented_route_refuses_missing_bad_and_underscoped_credentials(database, issuer):
    app = make_app(database, issuer)
    client = app.test_client()
    checked = 0
    for path, method, operation in operations(app):
        (requirement,) = operation["security"]
        (scope,) = requirement["bearer"]
        url = concrete(path)
        others = [s for s in ALL if s != scope]
        for label, headers, status in [
            ("none", {}, 401),
            ("bad", {"Authorization": "Bearer nonsense"}, 401),
            ("expired", {"Authorization": f"Bearer {issuer.token([scope], exp=1)}"}, 401),
            ("wrong scope", {"Authorization": f"Bearer {issuer.token(others)}"}, 403),
        ]:
            response = client.open(url, method=method, headers=headers, json={})
            assert response.status_code == status, (method, url, label, response.json)
            assert response.mimetype == "application/problem+json"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        checked += 1
    assert checked == len(list(operations(app)))


@pytest.mark.parametrize("path", ["/api/v1/openapi.json", "/api/v1/docs"])
def test_document_and_docs_need_no_credential(api, path):
    assert api.client.get(path).status_code == 200
