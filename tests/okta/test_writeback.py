"""Write-back: a leaver is removed from the Okta groups that granted access, and it is audited."""

from __future__ import annotations

from sqlalchemy import select

from provisioning.audit.models import AuditEvent
from provisioning.entitlements.mappings import create_mapping
from provisioning.identity.directory import create_group
from provisioning.okta.writeback import remove_from_granting_groups
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
