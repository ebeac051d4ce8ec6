"""The database layer: the SQLite writers' queue is first come, first served, and reentrant."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from provisioning.database import FairLock
from tests.conftest import ON_POSTGRES


def test_fair_lock_serves_waiters_in_arrival_order():
    lock, order, started = FairLock(), [], []
    lock.__enter__()

    def waiter(n: int) -> None:
        started.append(n)
        with lock:
            order.append(n)

    threads = []
    for n in range(5):
        thread = threading.Thread(target=waiter, args=(n,))
        thread.start()
        threads.append(thread)
        while len(started) <= n:
            time.sleep(0.001)
        time.sleep(0.02)  # let it queue before the next one arrives
    lock.__exit__()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_fair_lock_is_reentrant():
    lock = FairLock()
    with lock, lock:
        pass
    acquired = []
    thread = threading.Thread(target=lambda: acquired.append(lock.__enter__()))
    thread.start()
    thread.join(5)
    assert acquired


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's write-ahead log only")
def test_sqlite_checkpoints_never_wait_for_writers(database):
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with database.transaction() as session:
            session.execute(text("UPDATE audit_chain_head SET last_hash = last_hash"))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    started = time.monotonic()
    database.checkpoint()  # a write transaction is open: a blocking checkpoint would wait
    assert time.monotonic() - started < 1
    release.set()
    thread.join(10)
