"""The database layer: the SQLite writers' queue, hot readers and prepared statements."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, func, literal, select, text, true
from sqlalchemy.exc import DBAPIError, InvalidRequestError

from provisioning.audit import log as audit
from provisioning.connectors.catalogue import create_connector
from provisioning.connectors.models import AccessLevel, Connector, ConnectorKind, Publisher
from provisioning.database import (
    Database,
    FairLock,
    FileLock,
    chunked,
    utcnow,
)
from provisioning.hotpath import Prepared, PreparedWrite
from provisioning.identity.models import User
from tests.conftest import ON_POSTGRES
from tests.org import Org


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers()) | st.text().map(list), st.integers(1, 50))
def test_chunks_concatenate_to_the_list_none_empty_none_over_the_size(items, size):
    chunks = list(chunked(items, size))
    assert [item for chunk in chunks for item in chunk] == items
    assert all(0 < len(chunk) <= size for chunk in chunks)
    assert all(len(chunk) == size for chunk in chunks[:-1])


def test_a_chunk_size_under_one_is_refused():
    with pytest.raises(ValueError):
        list(chunked([1, 2], 0))


def test_a_file_lock_excludes_another_holder_until_released(tmp_path):
    path = str(tmp_path / "lock")
    first, second = FileLock(path), FileLock(path)
    assert first.acquire(blocking=False)
    assert not second.acquire(blocking=False)
    assert first.held and not second.held
    first.release()
    assert second.acquire(blocking=False)
    assert not first.acquire(blocking=False)
    second.release()
    second.release()  # releasing a lock not held changes nothing
    assert first.acquire()
    first.release()


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


def test_hot_reads_from_many_threads_share_a_few_connections(database):
    """A server that starts a thread per request must not open a connection per thread."""
    seen: list[int] = []

    def read() -> None:
        seen.append(database.hot_read(lambda c: id(c.connection.driver_connection)))

    for _ in range(50):
        thread = threading.Thread(target=read)
        thread.start()
        thread.join(5)
    assert len(seen) == 50 and len(set(seen)) == 1
    # At once, as many as run at once, and each is committed state read afresh.
    barrier = threading.Barrier(4)

    def together() -> None:
        database.hot_read(lambda c: (barrier.wait(5), c.execute(text("SELECT 1")).scalar()))

    threads = [threading.Thread(target=together) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    with database.transaction() as session:
        audit.record(session, audit.Origin("test", audit.Source.CLI), [audit.Entry("a", "b", "c")])
    assert (
        database.hot_read(
            lambda c: c.execute(text("SELECT last_event_id FROM audit_chain_head")).scalar()
        )
        == 1
    )


def _wait_gone(admin, pid: int) -> None:
    deadline = time.monotonic() + 5
    while (
        admin.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar()
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)


def test_a_prepared_write_stores_what_sqlalchemy_stores_and_counts_its_rows(database):
    """Typed values (UUIDs, aware times, JSON, None as JSON null) go through the column
    types as through SQLAlchemy; the count of rows changed is the driver's."""
    table = User.__table__
    now = utcnow()

    def row(name: str) -> dict:
        values = dict.fromkeys(table.columns.keys())
        values.update(
            id=uuid.uuid4(),
            user_name=name,
            user_name_key=name.lower(),
            active=True,
            created_at=now,
            updated_at=now,
            version=1,
            scim_attributes={"title": "Engineer", "emails": [{"value": name}]},
        )
        return values

    theirs, ours = row("Theirs@example.com"), row("Ours@example.com")
    ours["scim_attributes"] = theirs["scim_attributes"] = None
    insert = PreparedWrite(table.insert())
    change = table.update().where(table.c.user_name_key == bindparam("key"))
    rename = PreparedWrite(change.values(department="R", updated_at=bindparam("now")))
    with database.transaction() as session:
        connection = session.connection()
        connection.execute(table.insert(), theirs)
        assert insert.run(connection, ours) == 1
        insert.run_each(connection, [row("a@example.com"), row("b@example.com")])
        assert rename.run(connection, {"key": "nobody", "now": now}) == 0
        assert rename.run(connection, {"key": "ours@example.com", "now": now}) == 1
        # A column SQLAlchemy would give its default (updated_at's onupdate) must be given.
        with pytest.raises(ValueError, match="updated_at"):
            PreparedWrite(change.values(department="S")).run(connection, {"key": "nobody"})
        with pytest.raises(InvalidRequestError, match="version"):
            insert.run(
                connection, {k: v for k, v in row("c@example.com").items() if k != "version"}
            )

    def stored(ident: uuid.UUID) -> dict:
        with database.engine.connect() as connection:
            raw = connection.execute(
                select(*table.c, table.c.scim_attributes.is_(None).label("sql_null")).where(
                    table.c.id == ident
                )
            ).one()
        return {
            k: v
            for k, v in raw._mapping.items()
            if k not in ("id", "user_name", "user_name_key", "department")
        }

    assert stored(ours["id"]) == stored(theirs["id"])
    with database.reader() as session:
        users = {u.user_name: u for u in session.scalars(select(User))}
    assert set(users) == {
        "Theirs@example.com",
        "Ours@example.com",
        "a@example.com",
        "b@example.com",
    }
    assert (
        users["Ours@example.com"].department == "R" and users["Ours@example.com"].created_at == now
    )
    assert users["a@example.com"].scim_attributes["emails"] == [{"value": "a@example.com"}]


@pytest.mark.skipif(not ON_POSTGRES, reason="a server that drops connections: PostgreSQL only")
def test_a_hot_read_survives_its_connection_being_dropped(database):
    pid = database.hot_read(lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar())
    with database.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        _wait_gone(admin, pid)
    again = database.hot_read(lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar())
    assert again != pid


def _typed_statement():
    """Columns of every kind the hot statements read: ids, text, booleans, times,
    enums and JSON, a literal, and parameters of those types."""
    return (
        select(
            User.id,
            User.user_name,
            User.active,
            User.offboarded_at,
            User.created_at,
            literal("mapping").label("via"),
            Connector.kind,
            Connector.interfaces,
        )
        .select_from(User.__table__.join(Connector.__table__, true()))
        .where(
            User.created_at <= bindparam("now"),
            User.id != bindparam("skip", type_=User.id.type),
            Connector.slug == bindparam("slug"),
        )
        .order_by(User.user_name)
    )


def test_a_prepared_statement_reads_what_sqlalchemy_reads(database, origin):
    with database.transaction() as session:
        org = Org(session, origin)
        skipped = org.user()
        org.user(active=False)
        org.user().offboarded_at = utcnow()
        create_connector(
            session,
            origin,
            slug="docs",
            name="Docs",
            kind=ConnectorKind.REMOTE,
            capability=AccessLevel.READ,
            publisher=Publisher.DIRECTORY,
            interfaces=["web", "desktop"],
        )
    statement = _typed_statement()
    params = {"now": utcnow(), "skip": skipped.id, "slug": "docs"}
    theirs = database.hot_read(lambda c: [tuple(r) for r in c.execute(statement, params)])
    ours = database.hot_read(lambda c: Prepared(statement).all(c, params))
    assert [tuple(r) for r in ours] == theirs
    assert len(ours) == 2
    first, second = ours
    assert isinstance(first.id, uuid.UUID) and first.created_at.tzinfo == dt.UTC
    assert sorted(first.interfaces) == ["desktop", "web"] and first.via == "mapping"
    assert [first.active, second.active] == [False, True]
    assert second.offboarded_at is not None and second.offboarded_at.tzinfo == dt.UTC
    assert (
        database.hot_read(lambda c: Prepared(statement).first(c, {**params, "slug": "no"})) is None
    )


def test_a_prepared_statement_raises_sqlalchemys_errors(database):
    broken = Prepared(select(User.id).where(User.user_name == bindparam("name")))
    with pytest.raises(InvalidRequestError, match="name"):
        database.hot_read(lambda c: broken.all(c, {}))
    expanding = Prepared(select(User.id).where(User.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="ids"):
        database.hot_read(lambda c: expanding.all(c, {"ids": []}))
    missing = Prepared(select(text("nothing_here FROM nowhere")))
    with pytest.raises(DBAPIError):
        database.hot_read(lambda c: missing.all(c, {}))
    # The connection it ran on is still good for the next read.
    assert database.hot_read(lambda c: c.execute(text("SELECT 1")).scalar()) == 1


@pytest.mark.skipif(not ON_POSTGRES, reason="a server that drops connections: PostgreSQL only")
def test_a_prepared_statement_on_a_dropped_connection_runs_again_on_a_new_one(database):
    pid_of = Prepared(select(func.pg_backend_pid().label("pid")))
    pid = database.hot_read(lambda c: pid_of.first(c, {}).pid)
    with database.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        _wait_gone(admin, pid)
    assert database.hot_read(lambda c: pid_of.first(c, {}).pid) != pid


def test_fair_lock_with_a_path_excludes_other_processes(tmp_path):
    """The SQLite writers of every process queue on one lock file (not on busy sleeps)."""
    import subprocess
    import sys

    path, log = tmp_path / "db-writers", tmp_path / "log"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from provisioning.database import FairLock\n"
            "log = Path(sys.argv[2])\n"
            "with FairLock(sys.argv[1]):\n"
            "    log.write_text('held')\n"
            "    time.sleep(0.5)\n"
            "    log.write_text('held, released')\n",
            str(path),
            str(log),
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.read_text().startswith("held")
        with FairLock(str(path)):
            assert log.read_text() == "held, released"
    finally:
        holder.wait(30)
    assert holder.returncode == 0


def _owner(connection) -> tuple[int, int | None]:
    """The process that opened ``connection``, and its PostgreSQL backend (None on SQLite)."""
    opened_by = connection.info.setdefault("opened_by", os.getpid())
    backend = (
        connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() if ON_POSTGRES else None
    )
    return opened_by, backend


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork only")
def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents(database):
    """As gunicorn's --preload does: connections opened before the fork stay the parent's."""
    # One pooled connection, so that the parent's next checkout is the one it had.
    database = Database(database.url, **({"pool_size": 1} if ON_POSTGRES else {}))
    with database.transaction() as session:
        pooled = _owner(session.connection())
    hot = database.hot_read(_owner)
    assert pooled[0] == hot[0] == os.getpid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and leave at once
        try:
            with database.transaction() as session:
                child_pooled = _owner(session.connection())
                session.execute(text("SELECT 1"))
            child_hot = database.hot_read(_owner)
            owners = {child_pooled[0], child_hot[0]}
            answer = b"ok" if owners == {os.getpid()} else repr(owners).encode()
        except BaseException as exc:  # anything goes back to the parent
            answer = repr(exc).encode()[:1000]
        os.write(write, answer)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as reply:
        assert reply.read() == b"ok"
    # The parent's connections were neither used nor closed by the child.
    try:
        with database.transaction() as session:
            assert _owner(session.connection()) == pooled
        assert database.hot_read(_owner) == hot
    finally:
        database.dispose()
