"""Idempotency-Key races: only a lost race at the key's or the denial's unique index is
run again; any other integrity error is a defect and propagates."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from provisioning.database import utcnow
from provisioning.requests import idempotency
from provisioning.requests.models import AccessRequest, RequestKind, RequestState
from tests.org import Org


@pytest.fixture
def made(database, origin) -> dict:
    """One call task holding every unique handle: task, approval, denial and key."""
    with database.transaction() as session:
        org = Org(session, origin)
        ada = org.user("ada@example.com")
        github = org.connector("github", actions=(("merge", "write", "needs_approval"),))
        session.add(_row(ada.id, github.id, "t", "a", "j", "k"))
    return {"user": ada.id, "connector": github.id}


def _row(user_id, connector_id, task, approval, jti, key) -> AccessRequest:
    return AccessRequest(
        user_id=user_id,
        requested_by_id=user_id,
        requested_by="ada@example.com",
        connector_id=connector_id,
        access_level="read_write",
        actions=["merge"],
        justification="a call",
        duration_days=0,
        approvers=["owner"],
        state=RequestState.PENDING,
        deadline=utcnow() + dt.timedelta(days=1),
        kind=RequestKind.CALL,
        call={},
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
    user = uuid.uuid4() if handles["user"] == "nobody" else made["user"]
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
