"""Rules of access requests that hold for every sequence of operations (hypothesis).

Whatever people ask, approve, deny, cancel, and however deadlines and expiries pass,
the live grants of a requestable connector are exactly those an approved, unexpired
request justifies, at its level; and a refused operation changes nothing.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from provisioning.audit.log import Origin, Source
from provisioning.connectors.models import AccessLevel, Connector
from provisioning.database import utcnow
from provisioning.entitlements.expiry import expire
from provisioning.entitlements.models import Grant
from provisioning.identity.models import User
from provisioning.requests import workflow
from provisioning.requests.models import AccessRequest, RequestState
from tests.org import Org

ORIGIN = Origin("property", Source.ADMIN)
PEOPLE = ("boss", "olga", "ada", "bob")
LEVELS = ("read", "read_write")

ask = st.tuples(
    st.just("ask"),
    st.sampled_from(("self", "self", *PEOPLE)),  # who asks
    st.sampled_from(("ada", "bob")),  # for whom
    st.sampled_from(("github", "slack")),
    st.sampled_from(LEVELS),
    st.integers(min_value=0, max_value=12),  # days (the maximum is 10)
)
which = st.integers(min_value=1, max_value=2)
approve = st.tuples(st.just("approve"), which, st.sampled_from(("boss", "olga")))
other = st.one_of(
    st.tuples(st.sampled_from(("approve", "deny", "cancel")), which, st.sampled_from(PEOPLE)),
    st.tuples(st.sampled_from(("lapse", "expire")), which),
)
operations = st.lists(
    st.one_of(ask, ask, approve, approve, approve, other), min_size=3, max_size=14
)


def _org(session) -> dict[str, object]:
    org = Org(session, ORIGIN)
    boss = org.user("boss@example.com")
    olga = org.user("olga@example.com")
    people = {"boss": boss, "olga": olga}
    for name in ("ada", "bob"):
        people[name] = org.user(f"{name}@example.com", manager_id=str(boss.id))
    for slug, chain in (("github", ["manager", "owner"]), ("slack", ["owner"])):
        connector = org.connector(slug, owner="olga@example.com")
        workflow.set_policy(
            session, ORIGIN, connector, approvers=chain, max_days=10, decide_within_days=5
        )
    return {name: user.id for name, user in people.items()}


def _justified(session) -> set[tuple]:
    now = utcnow()
    best: dict[tuple, AccessLevel] = {}
    for request in session.scalars(
        select(AccessRequest).where(
            AccessRequest.state == RequestState.APPROVED, AccessRequest.expires_at > now
        )
    ):
        key = (request.user_id, request.connector_id)
        level = AccessLevel(request.access_level)
        if key not in best or level.rank > best[key].rank:
            best[key] = level
    return {(*key, str(level)) for key, level in best.items()}


def _live(session) -> set[tuple]:
    rows = session.execute(
        select(Grant.user_id, Grant.connector_id, Grant.access_level).where(
            Grant.revoked_at.is_(None)
        )
    )
    return {(u, c, str(level)) for u, c, level in rows}


def _run(session, ids, op) -> None:
    kind = op[0]
    if kind == "ask":
        _, who, whom, slug, level, days = op
        who = whom if who == "self" else who
        connector = session.scalar(select(Connector).where(Connector.slug == slug))
        workflow.create(
            session,
            ORIGIN,
            session.get(User, ids[who]),
            session.get(User, ids[whom]),
            connector,
            level,
            justification="because",
            duration_days=days,
        )
    elif kind in ("approve", "deny"):
        _, request_id, who = op
        workflow.decide(session, ORIGIN, request_id, session.get(User, ids[who]), kind)
    elif kind == "cancel":
        _, request_id, who = op
        workflow.cancel(session, ORIGIN, request_id, session.get(User, ids[who]))
    elif kind == "lapse":
        past = utcnow() - dt.timedelta(seconds=1)
        session.execute(
            update(AccessRequest).where(AccessRequest.id == op[1]).values(deadline=past)
        )
        workflow.lapse(session, ORIGIN)
    else:  # time passes beyond an approved request's expiry
        past = utcnow() - dt.timedelta(seconds=1)
        session.execute(
            update(AccessRequest)
            .where(AccessRequest.id == op[1], AccessRequest.expires_at.is_not(None))
            .values(expires_at=past)
        )
        expire(session, ORIGIN)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_grants_are_exactly_what_approved_unexpired_requests_justify(fresh_database, ops):
    database = fresh_database()
    try:
        with database.transaction() as session:
            ids = _org(session)
        for op in ops:
            with database.reader() as session:
                states = dict(session.execute(select(AccessRequest.id, AccessRequest.state)).all())
                grants = _live(session)
            try:
                with database.transaction() as session:
                    _run(session, ids, op)
            except workflow.RequestError:
                with database.reader() as session:  # refused: nothing changed
                    assert dict(
                        session.execute(select(AccessRequest.id, AccessRequest.state)).all()
                    ) == (states)
                    assert _live(session) == grants
            with database.reader() as session:
                assert _live(session) == _justified(session)
                event(f"grants held: {bool(_live(session))}")
                # Nobody approved a request they asked for or that gives them access.
                for request in session.scalars(select(AccessRequest)):
                    assert request.state is not RequestState.APPROVED or (
                        request.closed_by
                        not in {
                            session.get(User, request.user_id).user_name,
                            request.requested_by,
                        }
                    )
    finally:
        database.dispose()
