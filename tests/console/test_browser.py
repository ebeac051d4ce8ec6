"""The console in Chromium (Debian's package, driven by Playwright) against a live server.

The browser must start: a missing or broken Chromium fails these tests, never skips them
(``.ci/run`` installs it). One browser serves the module; each test gets its own server,
database and browser context. With ``CONSOLE_SCREENSHOTS=DIR`` the tests also save a
screenshot of each page they visit there (``docs/console/`` keeps a set).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from provisioning.audit.models import AuditEvent
from provisioning.connectors.models import Connector
from provisioning.delivery.worker import Deliverer
from provisioning.entitlements.models import Grant, Mapping
from provisioning.identity.models import User
from provisioning.requests.models import AccessRequest
from provisioning.reviews.models import ReviewItem
from provisioning.settings import load
from tests.delivery.conftest import add_target

CHROMIUM = os.environ.get("PROVISIONING_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import Error, sync_playwright

    manager = sync_playwright().start()
    try:
        launched = manager.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    except Error as exc:
        manager.stop()
        pytest.fail(
            f"Chromium at {CHROMIUM} cannot start ({exc}); install it: apt-get install -y "
            "chromium (the console's browser tests never skip)",
            pytrace=False,
        )
    yield launched
    launched.close()
    manager.stop()


@pytest.fixture
def live(app) -> Iterator[str]:
    """The app served on 127.0.0.1, reached as http://localhost (where Secure cookies work)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_port}"
    server.shutdown()


@pytest.fixture
def page(browser, live) -> Iterator[Any]:
    context = browser.new_context(base_url=live)
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def sign_in(page: Any, token: str) -> None:
    page.goto("/console/")
    assert "/console/sign-in" in page.url
    shot(page, "sign-in")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/")


def sign_in_as(page: Any, token: str, home: str) -> None:
    page.set_default_timeout(10_000)
    page.goto("/console/sign-in")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(home)


def test_an_admin_maps_a_group_then_offboards_a_person(page, seeded, database, receiver):
    add_target(database, "webhook", receiver.url, receiver.secret, name="gateway")
    sign_in(page, seeded.admin_token)
    assert page.locator("#live-grants").inner_text() == "2"
    assert page.locator("svg.chart").count() == 1
    shot(page, "overview")

    # A mapping, through its dry run.
    page.get_by_role("link", name="Mappings").click()
    page.get_by_label("Group", exact=True).select_option(label="ops")
    page.get_by_label("Connector", exact=True).select_option("wiki")
    page.get_by_label("Access level").select_option("read")
    page.get_by_role("button", name="Show who gains access").click()
    assert "mgr@example.com gains wiki (read)" in page.locator("#dry-run").inner_text()
    shot(page, "mapping-dry-run")
    with database.reader() as session:
        assert session.scalar(select(func.count()).select_from(Mapping)) == 1
    page.get_by_role("button", name="Create the mapping").click()
    assert "1 person(s) gained access" in page.locator("#mapping-done").inner_text()
    with database.reader() as session:
        assert session.scalar(select(func.count()).select_from(Mapping)) == 2

    # A person, found by search (htmx), their access and why.
    page.get_by_role("link", name="People").click()
    page.get_by_label("Search by name, userName or email").fill("lovelace")
    page.locator("#results").get_by_role("link", name="ada@example.com").click()
    grant = page.locator("#grant-github")
    assert "member of eng, mapped by mapping:1" in grant.inner_text()
    shot(page, "person")

    # Offboarded, confirmed; the target's acknowledgement arrives.
    page.get_by_label("Reason").fill("left the company")
    page.get_by_label("I understand").check()
    page.get_by_role("button", name="Offboard ada@example.com").click()
    assert page.locator("#person-state").inner_text() == "offboarded"
    assert page.locator("#no-access").is_visible()
    assert (
        "not yet"
        in page.get_by_role("table", name="Acknowledged by each downstream target").inner_text()
    )
    with database.reader() as session:
        ada = session.get(User, uuid.UUID(seeded.ada))
        assert str(ada.state) == "offboarded"
        live_grants = select(func.count()).where(
            Grant.user_id == ada.id, Grant.revoked_at.is_(None)
        )
        assert session.scalar(live_grants) == 0
        actors = set(
            session.scalars(select(AuditEvent.actor).where(AuditEvent.action == "grant.revoked"))
        )
        assert actors == {"admin"}
    settings = load(database_url=database.url, delivery_allowed_networks="127.0.0.0/8")
    deliverer = Deliverer(database, settings)
    deliverer.drain()
    deliverer.stop()
    page.reload()
    acknowledged = page.get_by_role("table", name="Acknowledged by each downstream target")
    assert acknowledged.locator("td").last.inner_text() == "yes"
    assert {"grant.revoked", "user.offboarded"} <= {e["type"] for e in receiver.received}
    shot(page, "person-offboarded")

    page.get_by_role("link", name="Audit").click()
    assert "offboarding.requested" in page.locator("main").inner_text()
    shot(page, "audit")
    page.get_by_role("link", name="Connectors").click()
    shot(page, "connectors")


def test_a_reviewer_signs_in_at_the_idp_and_revokes(page, idp, seeded, database):
    idp.person = {"preferred_username": "mgr@example.com", "groups": ["managers"]}
    page.goto("/console/sign-in")
    page.get_by_role("link", name="Sign in with your identity provider").click()
    page.wait_for_url("**/console/")
    assert "mgr@example.com" in page.locator("header").inner_text()
    page.get_by_role("link", name="Reviews").click()
    shot(page, "reviews")
    with database.reader() as session:
        items = {i.snapshot["user_name"]: i.id for i in session.scalars(select(ReviewItem))}
    card = page.locator(f"#item-{items['bob@example.com']}")
    card.get_by_label("Comment").fill("no longer on the project")
    card.get_by_role("button", name="Revoke").click()
    assert "Decided: revoke" in page.locator(f"#item-{items['bob@example.com']}").inner_text()
    with database.reader() as session:
        item = session.get(ReviewItem, items["bob@example.com"])
        assert (item.decision, item.decided_by) == ("revoke", "mgr@example.com")
    # A reviewer sees no admin action.
    page.get_by_role("link", name="Connectors").click()
    assert page.get_by_role("button", name="Disable github").count() == 0


def test_a_forged_post_and_a_viewers_admin_action_are_refused(page, seeded, database):
    # Signed in with the keyboard alone: the skip link, the IdP, the token, then Enter.
    page.goto("/console/sign-in")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == (
        "Sign in with your identity provider"
    )
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(seeded.viewer_token)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/")
    page.goto(f"/console/people/{seeded.ada}")
    assert page.get_by_role("button", name="Offboard ada@example.com").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    path = f"/console/people/{seeded.ada}/offboard"
    form = {"reason": "x", "confirm": "yes"}
    forged = page.request.post(path, form=form)
    assert forged.status == 400
    refused = page.request.post(path, form={**form, "csrf_token": token})
    assert refused.status == 403
    assert "needs the admin role" in refused.text()
    with database.reader() as session:
        assert str(session.get(User, uuid.UUID(seeded.ada)).state) == "active"


def test_a_person_asks_and_their_manager_approves_in_the_browser(
    browser, live, seeded, asking, database
):
    ada = browser.new_context(base_url=live).new_page()
    sign_in_as(ada, asking.ada, "**/console/requests")
    ada.get_by_role("link", name="Request wiki").click()
    ada.get_by_label("Access level").select_option("read")
    ada.get_by_label("For how many days").fill("7")
    ada.get_by_label("Why you need it").fill("writing the on-call runbook")
    shot(ada, "request-new")
    ada.get_by_role("button", name="Send the request").click()
    with database.reader() as session:
        (request,) = session.scalars(select(AccessRequest)).all()
    assert ada.locator(f"#request-{request.id}-state").inner_text() == "pending"
    shot(ada, "requests-mine")
    ada.context.close()

    mgr = browser.new_context(base_url=live).new_page()
    sign_in_as(mgr, asking.mgr, "**/console/requests")
    card = mgr.locator(f"#decide-{request.id}")
    assert "ada@example.com asks for wiki" in card.inner_text()
    assert "writing the on-call runbook" in card.inner_text()
    shot(mgr, "requests-inbox")
    card.get_by_label("Comment").fill("ok for the rotation")
    card.get_by_role("button", name="Approve").click()
    assert mgr.locator("#inbox-empty").is_visible()
    mgr.context.close()
    with database.reader() as session:
        request = session.get(AccessRequest, request.id)
        assert (str(request.state), request.closed_by) == ("approved", "mgr@example.com")
        wiki = session.scalar(select(Connector.id).where(Connector.slug == "wiki"))
        grant = session.scalar(
            select(Grant).where(
                Grant.user_id == uuid.UUID(seeded.ada),
                Grant.connector_id == wiki,
                Grant.revoked_at.is_(None),
            )
        )
        assert grant is not None
        decided = session.scalar(select(AuditEvent).where(AuditEvent.action == "request.decided"))
        assert (decided.actor, decided.reason) == ("mgr@example.com", "ok for the rotation")
