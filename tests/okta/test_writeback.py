"""Write-back: a leaver is removed from the Okta groups that granted access, and it is audited."""

from __future__ import annotations

from sqlalchemy import select

from provisioning.audit.models import AuditEvent
from provisioning.entitlements.mappings import create_mapping
from provisioning.okta.writeback import remove_from_granting_groups
from provisioning.people.lifecycle import create_group
from tests.org import Org


def test_leaver_is_removed_from_granting_groups_only(database, origin, okta, client):
    state = okta.state
    eng, social, gone = state.add_group("eng"), state.add_group("social"), state.add_group("gone")
    ada = state.add_user("ada@example.com")
    for group in (eng, social, gone):
        state.add_member(group["id"], ada["id"])
    with database.transaction() as session:
        org = Org(session, origin)
        github = org.connector("github")
        user = org.user("ada@example.com", external_id=ada["id"])
        for okta_group, mapped in ((eng, True), (social, False), (gone, True)):
            group = create_group(
                session,
                origin,
                display_name=okta_group["profile"]["name"],
                external_id=okta_group["id"],
            )
            org.join(user, group)
            if mapped:
                create_mapping(session, origin, group, github, "read")
    del state.groups[gone["id"]]  # deleted in Okta meanwhile
    outcomes = remove_from_granting_groups(database, client, user.id)
    assert outcomes == {eng["id"]: "removed", gone["id"]: "already gone"}
    assert state.members[eng["id"]] == []
    assert state.members[social["id"]] == [ada["id"]]  # not a granting group: untouched
    with database.reader() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "okta.groups_removed"))
        assert event.after["groups"] == outcomes


def test_hr_offboarding_is_written_back_once_by_the_job(database, origin, okta):
    from jobs.runner import run_job
    from provisioning.audit.log import Origin, Source
    from provisioning.offboarding import requests
    from provisioning.offboarding.models import Offboarding
    from provisioning.settings import load
    from tests.okta.okta_server import TOKEN

    state = okta.state
    eng = state.add_group("eng")
    lee = state.add_user("lee@example.com")
    state.add_member(eng["id"], lee["id"])
    with database.transaction() as session:
        org = Org(session, origin)
        user = org.user("lee@example.com", external_id=lee["id"])
        group = create_group(session, origin, display_name="eng", external_id=eng["id"])
        create_mapping(session, origin, group, org.connector("github"), "read")
        org.join(user, group)
        requests.request(
            session,
            Origin("workday", Source.HR),
            identified_by="userName",
            identifier="lee@example.com",
            reason="left",
        )
    settings = load(
        database_url=database.url,
        okta_org_url=okta.url,
        okta_allow_http=True,
        okta_api_token=TOKEN,
        okta_writeback=True,
    )
    run = run_job(database, settings, "okta-writeback")
    assert run.outcome == "succeeded" and run.counts == {"offboardings": 1}
    assert state.members[eng["id"]] == []
    with database.reader() as session:
        done = session.scalar(select(Offboarding))
        assert done.okta_writeback == {eng["id"]: "removed"}
    again = run_job(database, settings, "okta-writeback")
    assert again.counts == {"offboardings": 0}
    assert state.requests[f"/api/v1/groups/{eng['id']}/users/{lee['id']}"] == 1
    # Off by default: the job is not even scheduled.
    from jobs.registry import JOBS

    assert not JOBS["okta-writeback"].enabled(
        load(database_url=database.url, okta_org_url=okta.url, okta_allow_http=True)
    )
