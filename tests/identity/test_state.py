"""A person's status: the Python and SQL readings of ``User.state`` and ``User.eligible`` agree."""

from __future__ import annotations

import itertools
import uuid

from sqlalchemy import select

from provisioning.database import utcnow
from provisioning.identity.models import User, UserState


def test_state_and_eligibility_read_the_same_in_python_and_sql(database):
    combos = list(itertools.product([True, False], repeat=3))
    with database.transaction() as session:
        for i, (active, offboarded, deleted) in enumerate(combos):
            session.add(
                User(
                    id=uuid.UUID(int=i + 1),
                    user_name=f"p{i}",
                    user_name_key=f"p{i}",
                    active=active,
                    offboarded_at=utcnow() if offboarded else None,
                    deleted_at=utcnow() if deleted else None,
                )
            )
    with database.reader() as session:
        rows = session.execute(select(User, User.state, User.eligible).order_by(User.id)).all()
        assert len(rows) == len(combos)
        for (user, state, eligible), (active, offboarded, deleted) in zip(
            rows, combos, strict=True
        ):
            # Deleted before offboarded before deactivated, else active.
            expected = (
                UserState.DELETED
                if deleted
                else UserState.OFFBOARDED
                if offboarded
                else UserState.ACTIVE
                if active
                else UserState.DEACTIVATED
            )
            assert user.state is expected
            assert UserState(state) is expected
            assert user.eligible is bool(eligible) is (expected is UserState.ACTIVE)
