"""A small, realistic organisation for trying the service: connectors, actions, groups, people."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning.audit.log import Origin
from provisioning.connectors.catalogue import add_action, create_connector
from provisioning.connectors.models import Connector
from provisioning.database import utcnow
from provisioning.entitlements.mappings import create_exception, create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity.models import MembershipSource, User
from provisioning.people.lifecycle import create_group, create_user, set_active, set_membership

CONNECTORS = [
    {
        "slug": "github",
        "name": "GitHub",
        "kind": "remote",
        "capability": "read_write",
        "publisher": "directory",
        "security_review": "approved",
        "data_classification": "confidential",
        "interfaces": ["web", "desktop", "code"],
        "owner": "platform-team@example.com",
        "actions": [
            ("search_code", "read", "always_allow"),
            ("get_pull_request", "read", "always_allow"),
            ("create_issue", "write", "needs_approval"),
            ("merge_pull_request", "write", "needs_approval"),
            ("delete_repository", "write", "blocked"),
        ],
    },
    {
        "slug": "slack",
        "name": "Slack",
        "kind": "remote",
        "capability": "read_write",
        "publisher": "directory",
        "security_review": "approved",
        "data_classification": "internal",
        "interfaces": ["web", "mobile", "desktop"],
        "owner": "it-collab@example.com",
        "actions": [
            ("search_messages", "read", "always_allow"),
            ("post_message", "write", "needs_approval"),
            ("delete_message", "write", "blocked"),
        ],
    },
    {
        "slug": "confluence",
        "name": "Confluence",
        "kind": "remote",
        "capability": "read",
        "publisher": "directory",
        "security_review": "approved",
        "data_classification": "internal",
        "interfaces": ["web", "mobile", "desktop", "code"],
        "owner": "it-collab@example.com",
        "actions": [("search_pages", "read", "always_allow"), ("get_page", "read", "always_allow")],
    },
    {
        "slug": "warehouse",
        "name": "Data warehouse",
        "kind": "custom_mcp",
        "capability": "read",
        "publisher": "internal",
        "security_review": "approved",
        "data_classification": "regulated",
        "compliance_assessment": "DPIA-2026-014",
        "interfaces": ["web", "desktop", "code"],
        "owner": "data-platform@example.com",
        "actions": [("run_query", "read", "needs_approval"), ("export_table", "read", "blocked")],
    },
    {
        "slug": "filesystem",
        "name": "Local files",
        "kind": "desktop_extension",
        "capability": "read_write",
        "publisher": "third_party",
        "security_review": "approved",
        "data_classification": "confidential",
        "interfaces": ["desktop", "code"],
        "owner": "endpoint-security@example.com",
        "actions": [
            ("read_file", "read", "always_allow"),
            ("write_file", "write", "needs_approval"),
            ("delete_file", "write", "blocked"),
        ],
    },
    {
        # Not enabled: a third-party connector whose security review is still pending.
        "slug": "crm-forms",
        "name": "CRM guided forms",
        "kind": "remote",
        "capability": "interactive",
        "publisher": "third_party",
        "security_review": "pending",
        "data_classification": "confidential",
        "interfaces": ["web"],
        "owner": "sales-ops@example.com",
        "enabled": False,
        "actions": [
            ("lookup_account", "read", "always_allow"),
            ("update_opportunity", "write", "needs_approval"),
            ("guided_quote", "interactive", "needs_approval"),
        ],
    },
]

GROUPS = ["all-staff", "eng-platform", "eng-data", "sales"]

# user name, name, department, employee number, groups
PEOPLE = [
    (
        "ada.lovelace@example.com",
        "Ada Lovelace",
        "Engineering",
        "E1001",
        ["all-staff", "eng-platform"],
    ),
    (
        "grace.hopper@example.com",
        "Grace Hopper",
        "Engineering",
        "E1002",
        ["all-staff", "eng-platform", "eng-data"],
    ),
    ("edgar.codd@example.com", "Edgar Codd", "Data", "E1003", ["all-staff", "eng-data"]),
    ("mary.jackson@example.com", "Mary Jackson", "Sales", "E1004", ["all-staff", "sales"]),
    ("alan.kay@example.com", "Alan Kay", "Sales", "E1005", ["all-staff", "sales"]),
    ("contractor.sam@example.com", "Sam Contractor", "Engineering", "C2001", []),
    ("leaver.lee@example.com", "Lee Leaver", "Engineering", "E1006", ["all-staff", "eng-platform"]),
]

# person -> their manager (the enterprise ``manager``: who approves their access requests)
MANAGERS = {"contractor.sam@example.com": "grace.hopper@example.com"}

# group, connector, access level, action subset, tightened policies
MAPPINGS = [
    ("all-staff", "confluence", "read", None, None),
    ("all-staff", "slack", "read_write", None, None),
    ("eng-platform", "github", "read_write", None, None),
    ("eng-platform", "filesystem", "read_write", None, {"write_file": "needs_approval"}),
    ("eng-data", "warehouse", "read", None, None),
    ("eng-data", "github", "read", ["search_code", "get_pull_request"], None),
    ("sales", "slack", "read_write", None, {"post_message": "needs_approval"}),
]


def seed(session: Session, origin: Origin) -> str:
    """Create the demo organisation (once) and return a report of what exists."""
    if session.scalar(select(Connector.id).where(Connector.slug == "github")) is not None:
        return "demo organisation already present; nothing created\n" + _report(session)

    connectors = {}
    for spec in CONNECTORS:
        spec = dict(spec)
        actions = spec.pop("actions")
        enabled = spec.pop("enabled", True)
        # Its MCP server's identity, for enforcement points speaking AuthZEN (COAZ-MCP).
        spec.setdefault("resource_uri", f"https://mcp.example.com/{spec['slug']}")
        connector = create_connector(session, origin, enabled=enabled, **spec)
        for name, kind, policy in actions:
            add_action(session, origin, connector, name=name, kind=kind, org_policy=policy)
        connectors[connector.slug] = connector

    groups = {name: create_group(session, origin, display_name=name) for name in GROUPS}
    users = {}
    for user_name, full_name, department, number, member_of in PEOPLE:
        given, family = full_name.split(" ", 1)
        user = create_user(
            session,
            origin,
            user_name=user_name,
            email=user_name,
            display_name=full_name,
            given_name=given,
            family_name=family,
            department=department,
            employee_number=number,
            manager_id=MANAGERS.get(user_name),
        )
        users[user_name] = user
        for group in member_of:
            set_membership(
                session, origin, user, groups[group], True, source=MembershipSource.ADMIN
            )

    for group, slug, level, actions, policies in MAPPINGS:
        create_mapping(
            session,
            origin,
            groups[group],
            connectors[slug],
            level,
            actions=actions,
            policies=policies,
        )
    create_exception(
        session,
        origin,
        users["contractor.sam@example.com"],
        connectors["github"],
        "read",
        justification="Contract CR-311: code review of the billing service",
        expires_at=utcnow() + dt.timedelta(days=30),
    )
    # A leaver: deactivation revokes everything they held, in the same transaction.
    set_active(session, origin, users["leaver.lee@example.com"], False)
    return _report(session)


def _report(session: Session) -> str:
    lines = ["connectors:"]
    for connector in session.scalars(select(Connector).order_by(Connector.slug)):
        state = "enabled" if connector.enabled else "disabled"
        lines.append(
            f"  {connector.slug:<11} {connector.kind:<17} {connector.capability:<11} {state}"
            f"  {connector.resource_uri or ''}"
        )
        for action in connector.actions:
            lines.append(f"      {action.name:<20} {action.kind:<11} {action.org_policy}")
    lines.append("people (live grants):")
    live = (
        select(User.user_name, User.active, func.count(Grant.id))
        .outerjoin(Grant, (Grant.user_id == User.id) & Grant.revoked_at.is_(None))
        .group_by(User.id, User.user_name, User.active)
        .order_by(User.user_name)
    )
    for user_name, active, count in session.execute(live):
        lines.append(f"  {user_name:<28} {'active' if active else 'inactive':<9} {count} grants")
    return "\n".join(lines)
