"""Order and duplication do not matter: whatever order Okta's facts arrive in, the end is the same.

Hypothesis draws joiner, mover and leaver stories over two people, three groups
(two mapped to connectors, one nobody knows at the start) and turns each step into
an Okta event: some failed (outcome FAILURE), some dated far beyond the allowed skew,
some sent twice, some only through the System Log, some through both. The events
are delivered in random permutations through the real hook endpoint (Flask test
client) in batches, some deliveries resent, the inbox applied at random moments,
the System Log caught up from the Okta-compatible server at random moments, and
some people and the unknown group created through /scim/v2 at random moments.

The end state (who is active, who is in which group, the live grants) must equal
the state after delivering the same events one by one in ``published`` order, and
both must equal what the facts say (a model: per user status and per membership,
the latest fact wins, a denial wins a tie, a future date counts as its receipt,
and someone or a group only denied is not created).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from provisioning.audit.log import Origin, Source
from provisioning.connectors.models import Connector
from provisioning.database import Database, utcnow
from provisioning.entitlements.mappings import create_mapping
from provisioning.entitlements.models import Grant
from provisioning.identity.models import Group, Membership, User
from provisioning.okta import inbox
from provisioning.okta.catchup import catch_up
from provisioning.okta.client import OktaClient
from provisioning.okta.models import ParkedEvent
from provisioning.people.lifecycle import create_group
from provisioning.settings import load
from provisioning.tokens import credentials
from provisioning.web.app import create_app
from tests.okta.okta_server import OktaServer, iso
from tests.org import Org

SECRET = "hook-secret-for-stories"
USERS = ("00uada", "00ubob")
MAPPED = {"00geng": "eng", "00gsales": "sales"}
LATE = "00glate"  # known to nobody at the start, mapped to nothing
GROUPS = (*MAPPED, LATE)
MAPPINGS = (("00geng", "github", "read"), ("00gsales", "github", "read_write"))
MAPPINGS += (("00gsales", "wiki", "read"),)
DENY = ("user.lifecycle.deactivate", "user.lifecycle.suspend", "user.lifecycle.delete.initiated")
ALLOW = ("user.lifecycle.activate", "user.lifecycle.unsuspend", "user.lifecycle.reactivate")
FUTURE = dt.timedelta(days=30)  # far beyond PROVISIONING_OKTA_EVENT_SKEW_SECONDS (300 s)


def login(okta_id: str) -> str:
    return f"{okta_id.replace('-00u', '-')}@example.com"


# -- stories ------------------------------------------------------------------------------


@dataclass
class Fact:
    """One step of a story as Okta publishes it."""

    uuid: str
    event_type: str
    user: str
    group: str | None
    published: dt.datetime
    failed: bool = False
    future: bool = False
    channel: str = "hook"  # hook | log | both
    twice: bool = False  # the hook delivers it again, in another delivery

    @property
    def deny(self) -> bool:
        return self.event_type in DENY or self.event_type == "group.user_membership.remove"

    @property
    def key(self) -> tuple[str, ...]:
        """What it is a fact about: a user's status, a membership, or a user's profile."""
        if self.group is not None:
            return ("membership", self.user, self.group)
        if self.event_type == "user.lifecycle.create":
            return ("profile", self.user)
        return ("status", self.user)

    def event(self, ns: str) -> dict[str, Any]:
        """The event as Okta sends it, its ids in the namespace ``ns`` of one run."""
        targets = [
            {
                "id": ns + self.user,
                "type": "User",
                "alternateId": login(ns + self.user),
                "displayName": self.user[3:].title(),
            }
        ]
        if self.group is not None:
            name = ns + MAPPED.get(self.group, "late")
            targets.append({"id": ns + self.group, "type": "UserGroup", "displayName": name})
        return {
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, ns + self.uuid)),
            "published": iso(self.published),
            "eventType": self.event_type,
            "version": "0",
            "severity": "INFO",
            "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@example.com"},
            "outcome": {"result": "FAILURE" if self.failed else "SUCCESS", "reason": None},
            "target": targets,
            "debugContext": {"debugData": {}},
        }


@dataclass
class Story:
    facts: list[Fact]
    scim_users: list[str]
    scim_late_group: bool

    def published_order(self) -> list[Fact]:
        return sorted(self.facts, key=lambda f: f.published)


KINDS = (
    "user.lifecycle.create",
    "group.user_membership.add",
    "group.user_membership.add",
    "group.user_membership.remove",
    "group.user_membership.remove",
    "deny",
    "allow",
)


@st.composite
def steps(draw: st.DrawFn) -> tuple[str, str, str | None]:
    """One step: a joiner's create or add, a mover's add or remove, a leaver's deactivation
    (or a return); memberships weigh most, as in an organisation."""
    kind = draw(st.sampled_from(KINDS))
    user = draw(st.sampled_from(USERS))
    if kind == "deny":
        return draw(st.sampled_from(DENY)), user, None
    if kind == "allow":
        return draw(st.sampled_from(ALLOW)), user, None
    group = draw(st.sampled_from(GROUPS)) if kind.startswith("group.") else None
    return kind, user, group


@st.composite
def stories(draw: st.DrawFn) -> Story:
    drawn = draw(st.lists(steps(), min_size=1, max_size=10))
    start = utcnow().replace(microsecond=0) - dt.timedelta(hours=2)
    facts: list[Fact] = []
    future_keys: set[tuple[str, ...]] = set()
    for n, (event_type, user, group) in enumerate(drawn):
        fact = Fact(
            uuid=f"step-{n}",  # made a uuid per run (Fact.event)
            event_type=event_type,
            user=user,
            group=group,
            published=start + dt.timedelta(minutes=n),
            failed=draw(st.integers(0, 5)) == 0,
            channel=draw(st.sampled_from(("hook", "hook", "hook", "log", "both"))),
            twice=draw(st.booleans()),
        )
        # Dated far ahead: at most one per subject, whose receipt time then outranks the
        # rest (two on one subject would race on their receipt, which no order defines).
        if fact.key not in future_keys and draw(st.integers(0, 7)) == 0:
            future_keys.add(fact.key)
            fact.future = True
            fact.published = start + FUTURE + dt.timedelta(minutes=n)
        facts.append(fact)
    return Story(
        facts=facts,
        scim_users=draw(st.lists(st.sampled_from(USERS), unique=True, max_size=2)),
        scim_late_group=draw(st.booleans()),
    )


# -- what the facts say -------------------------------------------------------------------


@dataclass
class State:
    users: dict[str, bool] = field(default_factory=dict)  # Okta id -> active
    groups: set[str] = field(default_factory=set)
    members: set[tuple[str, str]] = field(default_factory=set)
    grants: set[tuple[str, str, str]] = field(default_factory=set)


def expected(story: Story) -> State:
    """The model: latest fact wins, a denial wins a tie, a denial alone creates nothing."""
    done = [f for f in story.facts if not f.failed]

    def rank(fact: Fact) -> tuple[dt.datetime, bool]:
        return (fact.published, fact.deny)  # a future date counts as later than any other

    state = State()
    creators = {
        f.user
        for f in done
        if f.event_type not in DENY and f.event_type != "group.user_membership.remove"
    }
    for user in creators | set(story.scim_users):
        statuses = [f for f in done if f.key == ("status", user)]
        state.users[user] = not max(statuses, key=rank).deny if statuses else True
    state.groups = set(MAPPED) | {
        f.group for f in done if f.event_type == "group.user_membership.add"
    }
    if story.scim_late_group:
        state.groups.add(LATE)
    for user in state.users:
        for group in state.groups:
            facts = [f for f in done if f.key == ("membership", user, group)]
            if facts and not max(facts, key=rank).deny:
                state.members.add((user, group))
    for user, group in state.members:
        if state.users[user]:
            for mapped, connector, level in MAPPINGS:
                if mapped == group:
                    state.grants.add((user, connector, level))
    # Grants add up: the highest level of a connector is held once.
    best: dict[tuple[str, str], str] = {}
    for user, connector, level in state.grants:
        if best.get((user, connector)) != "read_write":
            best[(user, connector)] = level
    state.grants = {(u, c, level) for (u, c), level in best.items()}
    return state


# -- delivering --------------------------------------------------------------------------


class World:
    """The service on one database for every run of the test: hooks, inbox, SCIM, catch-up.

    Runs do not share anything they are compared on: each has its own namespace
    of Okta ids, logins, groups and connectors (a fresh database per run costs a
    second on PostgreSQL, more than the run itself).
    """

    def __init__(self, database: Database, okta: OktaServer, client: OktaClient) -> None:
        self.database = database
        self.okta = okta
        self.client = client
        app = create_app(
            load(database_url=database.url, okta_hook_secrets=SECRET), database, background=False
        )
        self.http = app.test_client()
        with database.transaction() as session:
            self.scim_token = credentials.create(
                session, "okta-scim", ["scim:provision"], Origin("test", Source.CLI)
            )
        self.runs = 0


class Service:
    """One run: its own organisation (two mapped groups, two connectors) in the world."""

    def __init__(self, world: World) -> None:
        world.runs += 1
        self.world = world
        self.ns = ns = f"r{world.runs}-"
        self.database, self.http = world.database, world.http
        with world.okta.state.lock:
            world.okta.state.logs.clear()
        with self.database.transaction() as session:
            origin = Origin("test-admin", Source.ADMIN)
            org = Org(session, origin)
            connectors = {slug: org.connector(ns + slug) for slug in ("github", "wiki")}
            groups = {
                okta_id: create_group(
                    session, origin, display_name=ns + name, external_id=ns + okta_id
                )
                for okta_id, name in MAPPED.items()
            }
            for group, connector, level in MAPPINGS:
                create_mapping(session, origin, groups[group], connectors[connector], level)

    def deliver(self, facts: list[Fact], event_id: str | None = None) -> None:
        body = {
            "eventType": "com.okta.event_hook",
            "eventTypeVersion": "1.0",
            "eventId": event_id or str(uuid.uuid4()),
            "data": {"events": [f.event(self.ns) for f in facts]},
        }
        response = self.http.post(
            "/hooks/okta/events", data=json.dumps(body), headers={"Authorization": SECRET}
        )
        assert response.status_code == 200, response.get_data(as_text=True)

    def process(self) -> None:
        progress = inbox.process_pending(self.database)
        assert progress.failed == 0

    def log(self, fact: Fact) -> None:
        with self.world.okta.state.lock:
            self.world.okta.state.logs.append(fact.event(self.ns))

    def catch_up(self) -> None:
        run = catch_up(self.database, self.world.client)
        assert run.status == "succeeded", run.error

    def scim_user(self, okta_id: str) -> None:
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": login(self.ns + okta_id),
            "externalId": self.ns + okta_id,
            "active": True,
        }
        self._scim("/scim/v2/Users", body)

    def scim_group(self) -> None:
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": self.ns + "late",
            "externalId": self.ns + LATE,
        }
        self._scim("/scim/v2/Groups", body)

    def _scim(self, path: str, body: dict[str, Any]) -> None:
        response = self.http.post(
            path,
            data=json.dumps(body),
            headers={
                "Authorization": f"Bearer {self.world.scim_token}",
                "Content-Type": "application/scim+json",
            },
        )
        # 409: Okta's events created it first (the externalId is taken).
        assert response.status_code in (201, 409), response.get_data(as_text=True)

    def state(self) -> State:
        """This run's users, groups, memberships and live grants, by their story ids."""
        ns, size = self.ns, len(self.ns)
        mine = User.external_id.startswith(ns, autoescape=True)
        with self.database.reader() as session:
            assert session.scalars(select(ParkedEvent)).first() is None
            state = State()
            for okta_id, active in session.execute(
                select(User.external_id, User.active).where(mine, User.deleted_at.is_(None))
            ):
                state.users[okta_id[size:]] = active
            state.groups = {
                g[size:]
                for g in session.scalars(
                    select(Group.external_id).where(
                        Group.external_id.startswith(ns, autoescape=True)
                    )
                )
            }
            state.members = {
                (u[size:], g[size:])
                for u, g in session.execute(
                    select(User.external_id, Group.external_id)
                    .join(Membership, Membership.user_id == User.id)
                    .join(Group, Group.id == Membership.group_id)
                    .where(mine, Membership.present.is_(True))
                )
            }
            state.grants = {
                (u[size:], c[size:], str(level))
                for u, c, level in session.execute(
                    select(User.external_id, Connector.slug, Grant.access_level)
                    .join(Grant, Grant.user_id == User.id)
                    .join(Connector, Connector.id == Grant.connector_id)
                    .where(mine, Grant.revoked_at.is_(None))
                )
            }
        return state


def in_published_order(service: Service, story: Story) -> State:
    """The reference: Okta provisions through SCIM first, then every event once, oldest first."""
    for okta_id in story.scim_users:
        service.scim_user(okta_id)
    if story.scim_late_group:
        service.scim_group()
    for fact in story.published_order():
        service.deliver([fact])
        service.process()
    return service.state()


def plan(story: Story, draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Everything that reaches the service, in one random order."""
    steps: list[tuple[str, Any]] = []
    for fact in story.facts:
        if fact.channel in ("hook", "both"):
            steps.append(("hook", fact))
            if fact.twice:
                steps.append(("hook", fact))
        if fact.channel in ("log", "both"):
            steps.append(("log", fact))
    steps += [("scim_user", u) for u in story.scim_users]
    if story.scim_late_group:
        steps.append(("scim_group", LATE))
    steps += [("process", None)] * 2 + [("catch_up", None)] * 2
    return draw(st.permutations(steps))


def in_any_order(service: Service, steps: list[tuple[str, Any]], draw: st.DrawFn) -> State:
    batch: list[Fact] = []

    def flush() -> None:
        if batch:
            event_id = str(uuid.uuid4())
            service.deliver(batch, event_id)
            if draw(st.integers(0, 4)) == 0:
                service.deliver(batch, event_id)  # Okta's retry: the same delivery again
            batch.clear()

    for kind, what in steps:
        if kind == "hook":
            batch.append(what)
            if len(batch) >= draw(st.integers(1, 3)):
                flush()
            continue
        flush()
        if kind == "log":
            service.log(what)
        elif kind == "scim_user":
            service.scim_user(what)
        elif kind == "scim_group":
            service.scim_group()
        elif kind == "process":
            service.process()
        else:
            service.catch_up()
    flush()
    service.process()
    service.catch_up()
    return service.state()


PERMUTATIONS = 2


@pytest.fixture
def world(database, okta, client) -> World:
    """One for all the examples of a test (hypothesis shares function-scoped fixtures), with
    the Okta-compatible server and the okta SDK client of tests/okta/conftest.py."""
    return World(database, okta, client)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(story=stories(), data=st.data())
def test_order_and_duplication_do_not_matter(world, story, data):
    reference = in_published_order(Service(world), story)
    assert reference == expected(story)
    for _ in range(PERMUTATIONS):
        steps = plan(story, data.draw)
        assert in_any_order(Service(world), steps, data.draw) == reference
