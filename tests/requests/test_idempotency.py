"""Idempotency-Key races: only a lost race at the key's or the denial's unique index is
run again; any other integrity error is a defect and propagates."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from provisioning.identity.models import User
from provisioning.requests import idempotency
from provisioning.requests.models import AccessRequest
from tests.org import Org, call_task


@pytest.fixture
def made(database, origin) -> dict:
    """One call task holding every unique handle: task, approval, denial and key."""
    with database.transaction() as session:
        org = Org(session, origin)
        ada = org.user("ada@example.com")
        github = org.connector("github", actions=(("merge", "write", "needs_approval"),))
        session.add(_row(ada, github.id, "t", "a", "j", "k"))
    return {"user": ada, "connector": github.id}


def _row(user, connector_id, task, approval, jti, key) -> AccessRequest:
    return call_task(
        user,
        connector_id,
        "merge",
        task_id=f"arq_{task}",
        approval_id=f"apr_{approval}" if approval else None,
        binding_jti=jti,
        idempotency_key=key,
    )


@pytest.mark.parametrize(
    ("clash", "runs"),
    [
        ({"key": "k"}, 2),  # one new Idempotency-Key twice: the loser runs again
        ({"jti": "j"}, 2),  # one denial under two keys: the same
        ({"task": "t"}, 1),  # a handle made twice: a defect, not a race
        ({"approval": "a"}, 1),
        ({"user": "nobody"}, 1),  # a foreign key
    ],
)
def test_settled_runs_again_only_after_a_race_at_its_indexes(database, made, clash, runs):
    handles = {"task": "t2", "approval": None, "jti": "j2", "key": "k2", "user": None, **clash}
    user = made["user"]
    if handles["user"] == "nobody":
        user = User(id=uuid.uuid4(), user_name="nobody@example.com")
    calls = []

    def attempt() -> None:
        calls.append(1)
        with database.transaction() as session:
            session.add(
                _row(
                    user,
                    made["connector"],
                    handles["task"],
                    handles["approval"],
                    handles["jti"],
                    handles["key"],
                )
            )

    with pytest.raises(IntegrityError):
        idempotency.settled(attempt)
    assert len(calls) == runs
    with database.reader() as session:
        assert session.query(AccessRequest).count() == 1
