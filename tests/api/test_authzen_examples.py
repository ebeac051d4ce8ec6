"""Every example request of the AuthZEN Authorization API 1.0 specification, sent to a live
server holding the examples' people and resources as ordinary data of the model.

``authzen_spec_examples.json`` holds the request bodies as the specification prints them
(its JSON examples and HTTP examples, responses left out), with the endpoint each is for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.authzen_fixture import Live, group, person, serve

EXAMPLES = json.loads((Path(__file__).parent / "authzen_spec_examples.json").read_text())
# A page token the specification made up: not one this PDP gave out.
FOREIGN_TOKEN = "a3M9NDU2O3N6PTI="


def resource(live: Live, slug: str, kind: str, actions: list[tuple[str, str]]) -> None:
    live.admin_post(
        "/connectors",
        {
            "slug": slug,
            "name": f"{kind} {slug}",
            "kind": "remote",
            "capability": "read_write",
            "publisher": "internal",
            "interfaces": ["web"],
            "security_review": "approved",
            "resource_type": kind,
            "enabled": True,
        },
    )
    for name, action_kind in actions:
        live.admin_post(
            f"/connectors/{slug}/actions",
            {"name": name, "kind": action_kind, "org_policy": "always_allow"},
        )


@pytest.fixture
def live(database, issuer) -> Iterator[Live]:
    """alice@example.com may read accounts 123 and 456 and documents 1 and 3; document 2
    exists but she holds no grant of it. Resources of type todo exist, but not todo 1 (its
    id is document 1's: one connector, one id)."""
    for live in serve(database, issuer):
        alice = person(live, "alice@example.com")
        staff = group(live, "staff", [alice])
        account = [("can_read", "read"), ("can_write", "write")]
        document = [("read", "read"), ("can_read", "read"), ("can_edit", "write")]
        for slug in ("123", "456"):
            resource(live, slug, "account", account)
        for slug in ("1", "2", "3"):
            resource(live, slug, "document", document)
        resource(live, "todo-list", "todo", [("can_read", "read")])
        for slug in ("123", "456", "1", "3"):
            live.admin_post(
                "/mappings", {"group_id": staff, "connector": slug, "access_level": "read"}
            )
        yield live


def test_the_examples_cover_every_api():
    assert len(EXAMPLES) == 18
    assert {e["path"] for e in EXAMPLES} == {
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/access/v1/search/subject",
        "/access/v1/search/resource",
        "/access/v1/search/action",
    }


def test_every_example_request_is_answered(live):
    for example in EXAMPLES:
        body = example["request"]
        response = live.post(
            example["path"],
            body,
            headers={"X-Request-ID": "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"},
        )
        assert response.headers["X-Request-ID"] == "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"
        if body.get("page", {}).get("token") == FOREIGN_TOKEN:
            assert response.status_code == 400, response.text
            continue
        assert response.status_code == 200, (example["section"], response.text)
        answer = response.json()
        if "search" in example["path"]:
            assert isinstance(answer["results"], list)
        elif body.get("evaluations"):
            assert len(answer["evaluations"]) <= len(body["evaluations"])
        else:
            assert isinstance(answer["decision"], bool)


def test_the_example_decisions(live):
    by_section: dict[str, list] = {}
    for example in EXAMPLES:
        by_section.setdefault(example["section"], []).append(example["request"])
    semantics = by_section[
        "Example: Evaluate `read` action for three documents using all three semantics"
    ]
    expected = {
        "execute_all": [True, False, True],
        "deny_on_first_deny": [True, False],
        "permit_on_first_permit": [True],
    }
    for body in semantics:
        answer = live.post("/access/v1/evaluations", body).json()
        decisions = [e["decision"] for e in answer["evaluations"]]
        assert decisions == expected[body["options"]["evaluations_semantic"]]
    first = by_section["Example (non-normative)"][0]  # alice reads account 123
    assert live.post("/access/v1/evaluation", first).json()["decision"] is True
    which = {
        "subject": {"type": "user", "id": "alice@example.com"},
        "action": {"name": "can_read"},
        "resource": {"type": "account"},
    }
    found = live.post("/access/v1/search/resource", which).json()["results"]
    assert found == [{"type": "account", "id": "123"}, {"type": "account", "id": "456"}]
    paged = live.post("/access/v1/search/resource", {**which, "page": {"limit": 1}}).json()
    assert paged["results"] == [{"type": "account", "id": "123"}]
    token = paged["page"]["next_token"]
    rest = live.post("/access/v1/search/resource", {**which, "page": {"limit": 1, "token": token}})
    assert rest.json() == {
        "page": {"next_token": "", "count": 1},
        "results": [{"type": "account", "id": "456"}],
    }
