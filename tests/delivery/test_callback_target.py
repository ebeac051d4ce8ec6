"""The callback target: one, made on first use, even by two transactions at once."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from provisioning.delivery import outbox
from provisioning.delivery.models import Target, TargetKind


def test_two_transactions_making_the_callback_target_at_once_share_one(database):
    barrier = threading.Barrier(2)
    found: list[int] = []
    errors: list[BaseException] = []

    def make() -> None:
        try:
            barrier.wait(5)
            with database.transaction() as session:
                found.append(outbox.callback_target(session, 7))
                time.sleep(0.2)  # the other one meets this one's uncommitted row
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(found) == 2 and found[0] == found[1]
    with database.reader() as session:
        assert session.scalar(select(func.count()).select_from(Target)) == 1
        target = session.get(Target, found[0])
        assert (target.kind, target.name, target.max_attempts) == (
            TargetKind.CALLBACK,
            outbox.CALLBACK_TARGET,
            7,
        )
    with database.transaction() as session:  # found again, not made again
        assert outbox.callback_target(session, 3) == found[0]
