"""Hostile deliveries at the Okta event hook: never a 5xx, and the hook writes only its
inbox (a malformed delivery that authenticated kept, rejected, for inspection)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from provisioning.okta.events import HANDLED
from provisioning.okta.models import DeliveryState, InboxDelivery
from provisioning.settings import load
from provisioning.web.app import create_app
from tests import hostile
from tests.okta import payloads as p
from tests.rows import rows

SECRET = "hook-secret-current"
OLD_SECRET = "hook-secret-previous"
KEYS = (
    "eventId",
    "eventType",
    "data",
    "events",
    "uuid",
    "published",
    "target",
    "id",
    "type",
    "alternateId",
    "displayName",
    "outcome",
    "result",
)

TIMES = (
    st.sampled_from(
        [
            p.at(0),
            "2026-11-02T09:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "0001-01-01T00:00:00Z",
            "2026-11-02T09:00:00+25:00",
            "2026-02-30T00:00:00Z",
            "2026-11-02",
            "",
        ]
    )
    | hostile.strings()
)


def targets() -> st.SearchStrategy:
    target = st.fixed_dictionaries(
        {
            "type": st.sampled_from(["User", "UserGroup", "AppInstance"]) | hostile.strings(),
            "id": st.sampled_from(["00u1ada", "00g1eng"]) | hostile.strings(),
        },
        optional={
            "alternateId": hostile.strings(),
            "displayName": hostile.strings(),
            "detailEntry": hostile.json_values(KEYS),
        },
    )
    return st.lists(target | hostile.json_values(KEYS), max_size=3)


def events() -> st.SearchStrategy:
    event = st.fixed_dictionaries(
        {
            "uuid": st.uuids().map(str) | hostile.strings(),
            "published": TIMES,
            "eventType": st.sampled_from(sorted(HANDLED)) | hostile.strings(),
        },
        optional={
            "target": targets(),
            "outcome": st.fixed_dictionaries(
                {"result": st.sampled_from(["SUCCESS", "FAILURE", "Success"]) | hostile.strings()}
            ),
            "debugContext": hostile.json_values(KEYS),
            "actor": hostile.json_values(KEYS),
        },
    )
    return st.lists(event | hostile.json_values(KEYS), max_size=4)


def deliveries() -> st.SearchStrategy:
    envelope = st.fixed_dictionaries(
        {"data": st.fixed_dictionaries({"events": events()}) | hostile.json_values(KEYS)},
        optional={
            "eventId": st.uuids().map(str) | hostile.strings() | hostile.INTEGERS,
            "eventType": st.just("com.okta.event_hook") | hostile.strings(),
        },
    )
    minutes = st.floats(min_value=-1e6, max_value=1e6)
    valid = st.builds(lambda minute: p.delivery(p.joined(minute)), minutes) | st.builds(
        lambda minute: p.delivery(p.left(minute), p.joined(minute + 1)), minutes
    )
    return hostile.bodies(valid | envelope | hostile.json_values(KEYS))


def kept(database) -> list[InboxDelivery]:
    with database.reader() as session:
        return list(session.scalars(select(InboxDelivery).order_by(InboxDelivery.id)))


def test_no_delivery_is_a_server_error_and_the_hook_writes_only_its_inbox(database):
    """Budget: 300 examples in CI (about 10 s on SQLite); EDGE_FUZZ_EXAMPLES for more."""
    settings_ = load(database_url=database.url, okta_hook_secrets=f"{SECRET},{OLD_SECRET}")
    client = create_app(settings_, database, background=False).test_client()
    tally: Counter = Counter()

    @settings(max_examples=hostile.budget(300), deadline=None)
    @given(
        delivery=deliveries(),
        secret=st.sampled_from([SECRET, SECRET, SECRET, OLD_SECRET, "wrong", None]),
    )
    def check(delivery, secret):
        body, content_type = delivery
        headers = {} if secret is None else {"Authorization": secret}
        if content_type is not None:
            headers["Content-Type"] = content_type
        before = rows(database)
        stored = len(kept(database))
        response = client.post("/hooks/okta/events", data=body, headers=headers)
        tally[hostile.status_class(response.status_code)] += 1
        assert response.status_code < 500, response.get_data(as_text=True)
        after = rows(database)
        # Nothing but the inbox, whatever the answer: deliveries are applied later.
        assert after.without("okta_inbox") == before.without("okta_inbox")
        new = kept(database)[stored:]
        if response.status_code == 200:
            assert [d.state for d in new] in ([], [DeliveryState.PENDING])
        elif response.status_code == 400:
            assert response.mimetype == "application/problem+json"
            assert [d.state for d in new] == [DeliveryState.REJECTED]
        else:
            assert response.status_code in (401, 413, 415), response.status_code
            assert response.mimetype == "application/problem+json"
            assert new == []

    check()
    print(hostile.report("okta-hook", tally))
