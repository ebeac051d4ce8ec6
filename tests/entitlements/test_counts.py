"""The engine's daily grant counts agree with the grants table, whatever the changes."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from provisioning.entitlements import counts
from provisioning.entitlements.mappings import create_mapping, delete_mapping
from provisioning.entitlements.models import Grant, Mapping
from provisioning.people.lifecycle import set_active
from tests.org import Org

STEPS = st.lists(
    st.tuples(st.sampled_from(["join", "leave", "deactivate", "map", "unmap"]), st.integers(0, 3)),
    max_size=12,
)


class _Undo(Exception):
    """Rolls an example's transaction back, so that the next starts from nothing."""


def _counted(session) -> tuple[dict, int]:
    return counts.per_day(session, dt.date(2000, 1, 1)), counts.live(session)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_counts_kept_by_the_engine_equal_a_recount(database, origin, steps):
    with pytest.raises(_Undo), database.transaction() as session:
        org = Org(session, origin)
        people = [org.user() for _ in range(4)]
        groups = [org.group() for _ in range(2)]
        connectors = [org.connector() for _ in range(2)]
        create_mapping(session, origin, groups[0], connectors[0], "read")
        for step, n in steps:
            person, group, connector = people[n], groups[n % 2], connectors[n % 2]
            if step == "join":
                org.join(person, group)
            elif step == "leave":
                org.leave(person, group)
            elif step == "deactivate":
                set_active(session, origin, person, False)
            elif step == "map":
                if (
                    session.scalar(
                        select(Mapping.id).where(
                            Mapping.group_id == group.id, Mapping.connector_id == connector.id
                        )
                    )
                    is None
                ):
                    create_mapping(session, origin, group, connector, "read")
            else:
                for mapping in session.scalars(select(Mapping).where(Mapping.group_id == group.id)):
                    delete_mapping(session, origin, mapping)
        kept = _counted(session)
        live = session.scalar(select(func.count()).where(Grant.revoked_at.is_(None)))
        assert kept[1] == live
        counts.recount(session)
        assert _counted(session) == kept
        raise _Undo
