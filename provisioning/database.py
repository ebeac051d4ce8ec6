"""Connections, transactions and schema migrations for SQLite and PostgreSQL.

Every write runs in one transaction (:meth:`Database.transaction`). On SQLite
that transaction starts with ``BEGIN IMMEDIATE`` so writers queue instead of
failing half-way; on PostgreSQL writers serialise on the audit chain head
(see :mod:`provisioning.audit`). Alembic migrations are the only way the
schema is created, on both databases. Long lists go to the database in chunks of
:data:`CHUNK` (:func:`chunked`). The few paths every request takes read on connections
of :mod:`provisioning.hotpath`, which says why; everything else is SQLAlchemy's.

Two locks hold a file with ``flock`` (:class:`FileLock`, the one primitive): the
writers' :class:`FairLock` here, which blocks, is reentrant and serves threads in
arrival order; and the job lock of :mod:`jobs.runner`, which never waits (a job or
the scheduler's leadership is skipped when held elsewhere) and is a PostgreSQL
advisory lock on that database. They differ in those semantics, so both remain.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, DateTime, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from provisioning.hotpath import POOL_ONLY, HotConnections
from provisioning.text import fold

try:
    import fcntl
except ImportError:  # not POSIX: the writers of one process still queue
    fcntl = None  # type: ignore[assignment]

MIGRATIONS = Path(__file__).parent / "migrations"
MMAP_BYTES = 1 << 31
T = TypeVar("T")

# Items per statement when a long list is sent in chunks (the values of an IN list, the
# rows of one executemany). Far under either database's bound-parameter limit (32,766
# on SQLite since 3.32, 65,535 on PostgreSQL), so one size serves both; it bounds the
# size of a single statement, not a dialect's limit.
CHUNK = 1000


def chunked(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``, none empty, in order."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, not {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DatabaseError(Exception):
    """The database cannot be reached or is not in a usable state."""


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timestamps stored as naive UTC on both databases, returned as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    """Now, in UTC, at the microsecond precision both databases keep."""
    return dt.datetime.now(dt.UTC)


Reader = Session | Connection


def connection_of(reader: Reader) -> Connection:
    """The connection a read runs on: the session's, or the one given."""
    return reader.connection() if isinstance(reader, Session) else reader


def session_of(reader: Reader) -> Session:
    """An ORM session for a read: the one given, or one on the given connection."""
    return reader if isinstance(reader, Session) else Session(bind=reader)


class Base(DeclarativeBase):
    """Declarative base of every table of the service."""


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def _fold(value: object) -> object:
    return fold(value) if isinstance(value, str) else value


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy, not pysqlite, begins
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL: in WAL mode a commit survives a crash of the process, not of the machine
        # (the log is synced at checkpoints). FULL, a sync per commit, was measured and
        # undone: each sync waits in the writers' queue, SCIM creates fell from 448 to
        # 217/s and Okta acknowledgements at 200/s from p50 0.95 s to 2.8 s (a slow day of
        # the host). Machine-crash durability is PostgreSQL's (docs/architecture.md).
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints run outside the writers' queue (Database.transaction), not inside
        # whichever commit happens to cross the threshold.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        # Reads through a memory map of the file: pages come from the OS page cache,
        # shared by every process, instead of being read into each connection's 2 MB
        # cache. A decision's statement on 1M grants: 0.2-0.7 ms without, 0.05 ms with.
        # SQLite caps the size at its compile-time maximum (2 GiB by default).
        cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        cursor.close()
        # fold(x): provisioning.text.fold, for values no key column holds (SCIM filters on
        # attributes kept in JSON documents).
        dbapi_connection.create_function("fold", 1, _fold, deterministic=True)

    @event.listens_for(engine, "begin")
    def _begin(conn):
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return  # Database.hot_read: every statement on its own
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _postgresql_setup(engine: Engine, *, custom_plans: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        # psycopg prepares a statement after 5 runs, and PostgreSQL may then
        # switch it to a generic plan; for the engine's per-user queries that
        # plan is 20x slower than a custom one (10 ms against 0.5 ms). Keep
        # the prepared statements, plan each execution for its parameters.
        # Point lookups by unique keys (Database.hot_read) are the exception:
        # the generic plan is the same plan, without planning each time (a
        # decision's statement: 0.94 ms planned per call, 0.32 ms prepared).
        if custom_plans:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET plan_cache_mode = force_custom_plan")
            dbapi_connection.commit()


class FileLock:
    """An exclusive ``flock`` on a file, across processes (POSIX only).

    Not reentrant. The file is opened on each acquisition and closed on release, so
    two instances (in one process or several) exclude each other, and a descriptor
    inherited through fork never carries a lock into the child's own acquisitions.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock, waiting for it unless not ``blocking`` (then: False if held)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


class FairLock:
    """A reentrant lock granted in arrival order, optionally across processes.

    ``threading.Lock`` lets a thread that releases and re-acquires in a loop
    (the inbox applying deliveries one by one) win again and again over
    threads already waiting (acknowledgements): first come, first served
    bounds every writer's wait by the writers ahead of it.

    With ``path``, the owner also holds a :class:`FileLock` on that file, so
    the writers of every process on one SQLite database queue on it: the kernel
    hands it over as soon as it is released, where SQLite's busy handler has a
    waiting process sleep up to 100 ms between tries (two gunicorn workers
    taking turns at writes spent most of their time asleep).
    """

    def __init__(self, path: str | None = None) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._queue: deque[int] = deque()
        self._owner: int | None = None
        self._depth = 0
        self._file = FileLock(path) if path is not None and fcntl is not None else None

    def __enter__(self) -> FairLock:
        me = threading.get_ident()
        with self._condition:
            if self._owner == me:
                self._depth += 1
                return self
            self._queue.append(me)
            while self._owner is not None or self._queue[0] != me:
                self._condition.wait()
            self._queue.popleft()
            self._owner, self._depth = me, 1
        if self._file is not None:
            try:
                self._file.acquire()
            except BaseException:
                self._release()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        with self._condition:
            self._depth -= 1
            if self._depth:
                return
        if self._file is not None:
            self._file.release()
        self._release()

    def _release(self) -> None:
        with self._condition:
            self._owner, self._depth = None, 0
            self._condition.notify_all()


def _in_child(ref: weakref.ref[Database]) -> None:
    database = ref()
    if database is not None:
        database.forget_inherited()


class Database:
    """One database: its engine, its sessions and its migrations."""

    def __init__(self, url: str, **engine_options: object) -> None:
        self.url = url
        options: dict[str, object] = {}
        if url.startswith("sqlite"):
            options["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            # A server restart must not hand out dead connections; SQLite has no server.
            options["pool_pre_ping"] = True
        options.update(engine_options)
        self.engine = create_engine(url, **options)
        # The hot path's reads, outside the pool (provisioning.hotpath, which says why).
        # On PostgreSQL point lookups run on generic plans, other reads on custom ones
        # (see _postgresql_setup): two kinds of hot connection; on SQLite one serves both.
        unpooled = {k: v for k, v in options.items() if k not in POOL_ONLY}
        lookups = create_engine(url, **unpooled, poolclass=NullPool)
        if self.engine.dialect.name == "sqlite":
            _sqlite_setup(self.engine)
            _sqlite_setup(lookups)
            self._hot = dict.fromkeys((True, False), HotConnections(lookups))
        else:
            _postgresql_setup(self.engine)
            _postgresql_setup(lookups, custom_plans=False)
            reads = create_engine(url, **unpooled, poolclass=NullPool)
            _postgresql_setup(reads)
            self._hot = {True: HotConnections(lookups), False: HotConnections(reads)}
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writers: AbstractContextManager = nullcontext()
        self._checkpoint_every = 0
        self._commits = 0
        if self.engine.dialect.name == "sqlite":
            database = make_url(url).database
            on_disk = database not in (None, "", ":memory:") and not database.startswith("file:")
            self._writers = FairLock(f"{database}-writers" if on_disk else None)
            self._checkpoint_every = 100
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=functools.partial(_in_child, weakref.ref(self)))
        self._reader = self._sessions
        if self.engine.dialect.name == "sqlite":
            self._reader = sessionmaker(
                self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False
            )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error.

        On SQLite, writers of this process queue first, in arrival order
        (:class:`FairLock`): SQLite's own busy handler backs off with sleeps of
        up to 100 ms, the queue hands over at once. (Other processes still
        wait on the busy timeout.)
        """
        with self._writers, self._sessions.begin() as session:
            yield session
        if self._checkpoint_every:
            self._commits += 1
            if self._commits % self._checkpoint_every == 0:
                self.checkpoint()

    def analyze(self) -> None:
        """Bring the planner's statistics up to date (``ANALYZE``), as a load that grows
        tables many-fold should: SQLite keeps none until asked, and without them it takes
        a boolean index (``users.active``) for a selective one, reading every user to
        derive the access of a batch of them."""
        with self.transaction() as session:
            session.execute(text("ANALYZE"))

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the SQLite file without blocking anyone (PASSIVE)."""
        raw = self.engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            raw.close()

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A session for reading committed state; it never writes."""
        session = self._reader()
        try:
            yield session
        finally:
            # Ends the transaction without a commit; loaded objects stay readable.
            session.close()

    @contextmanager
    def hot_reader(self, *, lookups: bool = False) -> Iterator[Connection]:
        """A hot connection (:class:`provisioning.hotpath.HotConnections`) for one SCIM
        operation's reads, without an ORM session: one snapshot on SQLite, READ COMMITTED
        on PostgreSQL. Only reads may run on it. ``lookups`` when its first read is a
        point lookup by unique keys (generic plans on PostgreSQL)."""
        with self._hot[lookups].connection(snapshot=True) as connection:
            yield connection

    def hot_read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work``, point lookups only, on a hot connection: a token check, a
        decision."""
        return self._hot[True].run(work)

    # -- migrations ---------------------------------------------------------

    def _alembic(self) -> Config:
        config = Config(str(MIGRATIONS / "alembic.ini"))
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["engine"] = self.engine
        return config

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision``; raise :class:`DatabaseError` if unreachable."""
        try:
            command.upgrade(self._alembic(), revision)
        except SQLAlchemyError as exc:
            raise DatabaseError(self.explain(exc)) from None

    def downgrade(self, revision: str) -> None:
        command.downgrade(self._alembic(), revision)

    def head(self) -> str:
        return ScriptDirectory.from_config(self._alembic()).get_current_head()

    def current(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def check_ready(self) -> None:
        """Raise :class:`DatabaseError` unless reachable and migrated to head."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                current = MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as exc:
            raise DatabaseError(self.explain(exc)) from None
        head = self.head()
        if current != head:
            raise DatabaseError(f"schema at revision {current}, expected {head}")

    def explain(self, exc: SQLAlchemyError) -> str:
        """One line on why the database cannot be used, without its password."""
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return f"cannot use the database at {redact(self.url)}: {reason}"

    def forget_inherited(self) -> None:
        """In a forked child: leave every open connection to the parent.

        A connection open before the fork (the app's start-up read, with gunicorn's
        ``--preload``) is one socket, or one SQLite handle, in both processes; used by
        both, it corrupts the protocol (PostgreSQL: "unexpected result EMPTY_QUERY from
        command 'BEGIN'") and the transactions riding on it. The child opens its own:
        the pool forgets its connections without closing them (SQLAlchemy's advice for
        a fork), and the idle hot connections are kept referenced but never used, as
        closing them would end the parent's sessions too.
        """
        self.engine.dispose(close=False)
        for hot in set(self._hot.values()):
            hot.forget_inherited()

    def dispose(self) -> None:
        for hot in set(self._hot.values()):
            hot.dispose()
        self.engine.dispose()
