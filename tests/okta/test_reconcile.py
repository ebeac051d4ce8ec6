"""Reconciliation through the okta SDK: drift in each direction, repaired or only reported."""

from __future__ import annotations

import datetime as dt
import json
import time

from click.testing import CliRunner
from sqlalchemy import func, select

from provisioning.audit.models import AuditEvent
from provisioning.cli import main
from provisioning.connectors.models import Connector
from provisioning.entitlements.models import Grant
from provisioning.identity.models import MembershipSource, User
from provisioning.okta.reconcile import reconcile
from provisioning.people.lifecycle import set_membership
from tests.okta.okta_server import TOKEN
from tests.org import Org, holders, mapped_okta_group


def audit_count(database) -> int:
    with database.reader() as session:
        return session.scalar(select(func.count(AuditEvent.id)))


def test_missing_membership_is_added_and_granted(database, origin, okta, client):
    state = okta.state
    eng = state.add_group("eng")
    ada = state.add_user("ada@example.com", name="Ada Lovelace", employeeNumber="E1")
    state.add_member(eng["id"], ada["id"])
    mapped_okta_group(database, origin, eng["id"])
    run = reconcile(database, client)
    assert run.status == "succeeded", run.error
    assert run.drift["missing"] == [[eng["id"], ada["id"]]]
    assert holders(database) == {ada["id"]}
    with database.reader() as session:
        user = session.scalar(select(User).where(User.external_id == ada["id"]))
        assert (user.user_name, user.given_name, user.employee_number) == (
            "ada@example.com",
            "Ada",
            "E1",
        )
        sources = set(session.scalars(select(AuditEvent.source)).all())
        assert "okta-sync" in sources


def test_extra_membership_is_removed_and_revoked(database, origin, okta, client):
    eng = okta.state.add_group("eng")
    bob = okta.state.add_user("bob@example.com")
    group = mapped_okta_group(database, origin, eng["id"])
    with database.transaction() as session:
        user = Org(session, origin).user("bob@example.com", external_id=bob["id"])
        set_membership(session, origin, user, group, True, source=MembershipSource.SCIM)
    assert holders(database) == {bob["id"]}
    run = reconcile(database, client)
    assert run.drift["extra"] == [[eng["id"], bob["id"]]]
    assert holders(database) == set()


def test_missed_deactivation_is_found_and_repaired(database, origin, okta, client):
    eng = okta.state.add_group("eng")
    lee = okta.state.add_user("lee@example.com")
    okta.state.add_member(eng["id"], lee["id"])
    mapped_okta_group(database, origin, eng["id"])
    reconcile(database, client)
    assert holders(database) == {lee["id"]}
    # Okta deactivates Lee; the hook never arrives.
    okta.state.set_status(lee["id"], "DEPROVISIONED")
    run = reconcile(database, client)
    assert run.drift["deactivated"] == [lee["id"]]
    assert holders(database) == set()
    with database.reader() as session:
        assert session.scalar(select(Grant.revoke_reason)) == "user deactivated"
    # Reactivated in Okta: access comes back.
    okta.state.set_status(lee["id"], "ACTIVE")
    run = reconcile(database, client)
    assert run.drift["reactivated"] == [lee["id"]]
    assert holders(database) == {lee["id"]}


def test_user_unknown_to_okta_is_reported_as_orphaned_not_changed(database, origin, okta, client):
    eng = okta.state.add_group("eng")
    mapped_okta_group(database, origin, eng["id"])
    with database.transaction() as session:
        Org(session, origin).user("ghost@example.com", external_id="00ughost")
    run = reconcile(database, client)
    assert run.drift["orphaned"] == ["00ughost"]
    with database.reader() as session:
        assert session.scalar(select(User.active).where(User.external_id == "00ughost"))


def test_dry_run_reports_and_changes_nothing(database, origin, okta, client):
    eng = okta.state.add_group("eng")
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"])
    mapped_okta_group(database, origin, eng["id"])
    before = audit_count(database)
    run = reconcile(database, client, dry_run=True)
    assert run.dry_run and run.counts["missing"] == 1
    assert audit_count(database) == before
    assert holders(database) == set()


def test_rate_limit_is_honoured_not_hammered(database, origin, okta, client):
    eng = okta.state.add_group("eng")
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"])
    mapped_okta_group(database, origin, eng["id"])
    okta.state.fail(f"/api/v1/groups/{eng['id']}/users", 429)
    started = time.monotonic()
    run = reconcile(database, client)
    assert run.status == "succeeded", run.error
    assert time.monotonic() - started >= 1  # waited for the reset, did not retry at once
    assert okta.state.requests[f"/api/v1/groups/{eng['id']}/users"] == 2
    assert holders(database) == {ada["id"]}


def test_a_500_mid_run_fails_cleanly_and_the_next_run_completes(database, origin, okta, client):
    first = okta.state.add_group("first", okta_id="00g1first")
    second = okta.state.add_group("second", okta_id="00g2second")
    ada, bob = okta.state.add_user("ada@example.com"), okta.state.add_user("bob@example.com")
    okta.state.add_member(first["id"], ada["id"])
    okta.state.add_member(second["id"], bob["id"])
    mapped_okta_group(database, origin, first["id"], "first")
    mapped_okta_group(database, origin, second["id"], "second")
    okta.state.fail(f"/api/v1/groups/{second['id']}/users", 500)
    before = audit_count(database)
    run = reconcile(database, client)
    assert run.status == "failed" and "HTTP 500" in run.error
    # The run plans from everything it fetched: with the plan incomplete, nothing is applied
    # (the first group's repair could be half of a move whose other half is missing).
    assert holders(database) == set()
    assert audit_count(database) == before
    assert run.drift["missing"] == [[first["id"], ada["id"]]]
    run = reconcile(database, client)
    assert run.status == "succeeded"
    assert holders(database) == {ada["id"], bob["id"]}


def test_a_failure_listing_users_applies_no_membership_repair(database, origin, okta, client):
    eng = okta.state.add_group("eng")
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"])
    mapped_okta_group(database, origin, eng["id"])
    okta.state.fail("/api/v1/users", 503, times=5)  # past the SDK's retries
    run = reconcile(database, client)
    assert run.status == "failed" and "HTTP 503" in run.error
    assert holders(database) == set()
    assert reconcile(database, client).status == "succeeded"
    assert holders(database) == {ada["id"]}


def test_a_group_deleted_here_while_the_run_fetches_is_left_alone(database, origin, okta, client):
    from provisioning.people.lifecycle import delete_group

    first, second = okta.state.add_group("first"), okta.state.add_group("second")
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(first["id"], ada["id"])
    okta.state.add_member(second["id"], ada["id"])
    doomed = mapped_okta_group(database, origin, first["id"], "first")
    mapped_okta_group(database, origin, second["id"], "second")

    def meanwhile(stage: str, done: int, total: int) -> None:
        # SCIM deletes the first group after its members were fetched, before the repairs.
        if stage == "groups" and done == total:
            with database.transaction() as session:
                delete_group(session, origin, session.get(type(doomed), doomed.id))

    run = reconcile(database, client, progress=meanwhile)
    assert run.status == "succeeded", run.error
    assert len(run.drift["missing"]) == 2
    with database.reader() as session:
        slugs = set(
            session.scalars(
                select(Connector.slug)
                .join(Grant, Grant.connector_id == Connector.id)
                .where(Grant.revoked_at.is_(None))
            )
        )
    assert slugs == {"second"}


def test_vanished_group_is_skipped_with_a_message(database, origin, okta, client):
    mapped_okta_group(database, origin, "00ggone")
    run = reconcile(database, client)
    assert run.status == "succeeded"
    assert run.drift["vanished_groups"] == ["00ggone"]


def test_expired_token_and_malformed_answers_fail_the_run_with_a_reason(
    database, origin, okta, client
):
    eng = okta.state.add_group("eng")
    mapped_okta_group(database, origin, eng["id"])
    okta.state.fail("/api/v1/groups/", 200, body="{not json")
    run = reconcile(database, client)
    assert run.status == "failed" and "not JSON" in run.error
    okta.state.token = "rotated"
    run = reconcile(database, client)
    assert run.status == "failed" and "HTTP 401" in run.error


def test_incremental_run_asks_only_for_what_changed(database, origin, okta, client, monkeypatch):
    monkeypatch.setattr("provisioning.okta.reconcile.INCREMENTAL_OVERLAP", dt.timedelta(0))
    groups = [okta.state.add_group(f"g{i}") for i in range(5)]
    people = [okta.state.add_user(f"p{i}@example.com") for i in range(5)]
    for group, person in zip(groups, people, strict=True):
        okta.state.add_member(group["id"], person["id"])
        mapped_okta_group(database, origin, group["id"], group["profile"]["name"])
    full = reconcile(database, client)
    assert full.mode == "full" and full.counts["groups"] == 5
    time.sleep(0.01)
    okta.state.remove_member(groups[2]["id"], people[2]["id"])
    incremental = reconcile(database, client, full=False)
    assert incremental.mode == "incremental"
    assert incremental.counts["groups"] == 1
    assert incremental.drift["extra"] == [[groups[2]["id"], people[2]["id"]]]
    assert incremental.requests < full.requests
    assert people[2]["id"] not in holders(database)


def test_only_the_named_groups(database, origin, okta, client):
    a, b = okta.state.add_group("a"), okta.state.add_group("b")
    mapped_okta_group(database, origin, a["id"], "a")
    mapped_okta_group(database, origin, b["id"], "b")
    run = reconcile(database, client, groups=[b["id"]])
    assert run.counts["groups"] == 1
    assert okta.state.requests[f"/api/v1/groups/{a['id']}/users"] == 0


def test_cli_dry_run_json_and_runs(database, origin, okta):
    eng = okta.state.add_group("eng")
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"])
    mapped_okta_group(database, origin, eng["id"])
    env = {
        "DATABASE_URL": database.url,
        "PROVISIONING_OKTA_ORG_URL": okta.url,
        "PROVISIONING_OKTA_API_TOKEN": TOKEN,
        "PROVISIONING_OKTA_ALLOW_HTTP": "true",
    }
    result = CliRunner().invoke(main, ["reconcile", "--dry-run", "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dry_run"] and summary["drift"]["missing"] == [[eng["id"], ada["id"]]]
    assert holders(database) == set()
    result = CliRunner().invoke(main, ["okta", "runs", "--json"], env=env)
    assert json.loads(result.stdout)[0]["id"] == summary["id"]
    missing = CliRunner().invoke(main, ["reconcile"], env={"DATABASE_URL": database.url})
    assert missing.exit_code == 2 and "PROVISIONING_OKTA_ORG_URL" in missing.stderr


def test_a_reconciliation_removing_too_many_memberships_is_held(database, origin, okta, client):
    from provisioning.entitlements.models import RevocationHold
    from provisioning.settings import load

    eng = okta.state.add_group("eng")
    group = mapped_okta_group(database, origin, eng["id"])
    with database.transaction() as session:
        org = Org(session, origin)
        for n in range(8):
            person = okta.state.add_user(f"p{n}@example.com")
            user = org.user(f"p{n}@example.com", external_id=person["id"])
            set_membership(session, origin, user, group, True, source=MembershipSource.SCIM)
    limits = load(mass_revocation_share=0.10, mass_revocation_minimum=5)
    # Okta's group is empty: 8 memberships are extra.
    run = reconcile(database, client, settings=limits)
    assert run.status == "succeeded", run.error
    # Removed set-wise, one engine run per batch: the batch's eight revocations are over
    # the limits together, so all of them wait in one hold.
    assert len(run.drift["extra"]) == 8 and run.counts["revocations_held"] == 8
    assert len(holders(database)) == 8
    with database.reader() as session:
        hold = session.scalar(select(RevocationHold))
    assert hold.cause == f"okta reconciliation run {run.id} (full)"
    assert (hold.revocations, hold.active_grants) == (8, 8)


def test_a_person_whose_okta_record_breaks_the_text_rules_is_not_added(
    database, origin, okta, client
):
    """A login of 200 x U+0130 is 400 characters once case-folded (provisioning/text.py):
    that person gets no user and no access; the run goes on for everyone else."""
    state = okta.state
    eng = state.add_group("eng")
    odd = state.add_user("\u0130" * 200)
    ada = state.add_user("ada@example.com")
    for person in (odd, ada):
        state.add_member(eng["id"], person["id"])
    mapped_okta_group(database, origin, eng["id"])
    run = reconcile(database, client)
    assert run.status == "succeeded", run.error
    assert holders(database) == {ada["id"]}
    with database.reader() as session:
        assert session.scalar(select(User.id).where(User.external_id == odd["id"])) is None
