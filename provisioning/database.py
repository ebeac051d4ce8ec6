"""Connections, transactions and schema migrations for SQLite and PostgreSQL.

Every write runs in one transaction (:meth:`Database.transaction`). On SQLite
that transaction starts with ``BEGIN IMMEDIATE`` so writers queue instead of
failing half-way; on PostgreSQL writers serialise on the audit chain head
(see :mod:`provisioning.audit`). Alembic migrations are the only way the
schema is created, on both databases. Long lists go to the database in chunks of
:data:`CHUNK` (:func:`chunked`).

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
from collections import deque, namedtuple
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, DateTime, Engine, Select, create_engine, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, InvalidRequestError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeDecorator

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


class _OnCursor:
    """A statement compiled once for each dialect it runs on (:class:`_Compiled`)."""

    def __init__(self, statement: Select | UpdateBase) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = _Compiled(self.statement, dialect)
        return compiled


class Prepared(_OnCursor):
    """A Core SELECT compiled once per dialect and run on the driver's own cursor.

    For the few statements every request runs (a token check, a decision), where
    SQLAlchemy's work per execution (parameter and result set-up, events, the
    compiled cache) costs more than the statement itself: 0.07 ms against
    0.02 ms for a decision on SQLite. Parameters and results still go through
    each column type's own bind and result processors, so values are the same
    Python objects an ORM read returns; rows are named tuples. Driver errors are
    raised as SQLAlchemy's, and a dropped connection is invalidated, so
    :meth:`Database.hot_read` recovers from it as from any other statement.
    """

    def __init__(self, statement: Select) -> None:
        super().__init__(statement)
        self._row = namedtuple("Row", [c.key for c in statement.selected_columns])  # type: ignore[misc]

    def all(self, connection: Connection, params: dict[str, Any]) -> list[Any]:
        """Every row, for ``params`` by bind parameter name."""
        compiled = self._for(connection.dialect)
        rows = compiled.run(connection, params)
        make, processors = self._row._make, compiled.processors
        if not processors:
            return [make(row) for row in rows]
        return [
            make([v if p is None else p(v) for p, v in zip(processors, row, strict=True)])
            for row in rows
        ]

    def first(self, connection: Connection, params: dict[str, Any]) -> Any | None:
        rows = self.all(connection, params)
        return rows[0] if rows else None


class _Compiled:
    """A statement's SQL, constant parameters and type processors for one dialect."""

    def __init__(self, statement: Select | UpdateBase, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        unsupported = [n for n, b in compiled.binds.items() if b.expanding or b.callable]
        if unsupported:  # each would need SQLAlchemy's own work per execution
            raise ValueError(f"expanding or callable bind parameters: {sorted(unsupported)}")
        defaulted = [c.key for c in (*compiled.insert_prefetch, *compiled.update_prefetch)]
        if defaulted:  # SQLAlchemy computes these per execution: the statement must give them
            raise ValueError(f"columns given their default by SQLAlchemy: {sorted(defaulted)}")
        self.sql = compiled.string
        self.order = compiled.positiontup  # None when the driver takes names
        self.required = frozenset(n for n, b in compiled.binds.items() if b.required)
        self.constants = {
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        }
        self.binders = [
            (name, processor)
            for name, bind in compiled.binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect))
        ]
        processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in getattr(statement, "selected_columns", ())
        ]
        self.processors = processors if any(processors) else None

    def arguments(self, params: dict[str, Any]) -> Any:
        """The driver's parameters for ``params`` by bind parameter name."""
        if missing := self.required.difference(params):
            raise InvalidRequestError(f"no value for bind parameter(s) {sorted(missing)}")
        values = {**self.constants, **params}
        for name, processor in self.binders:
            if name in values:
                values[name] = processor(values[name])
        return values if self.order is None else [values[n] for n in self.order]

    def run(self, connection: Connection, params: dict[str, Any]) -> list[Any]:
        return self.on_cursor(connection, self.arguments(params), lambda cursor: cursor.fetchall())

    def on_cursor(self, connection: Connection, arguments: Any, then: Callable[[Any], T]) -> T:
        """Execute with ``arguments`` (a list of them: once for each) on the driver's cursor,
        and return what ``then`` makes of the cursor."""
        raw = connection.connection
        dialect = connection.dialect
        cursor = raw.cursor()
        try:
            if isinstance(arguments, _Each):
                cursor.executemany(self.sql, arguments)
            else:
                cursor.execute(self.sql, arguments)
            return then(cursor)
        except dialect.loaded_dbapi.Error as exc:
            dropped = dialect.is_disconnect(exc, raw, cursor)
            if dropped:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                self.sql,
                arguments,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=dropped,
                dialect=dialect,
            ) from exc
        finally:
            cursor.close()


class _Each(list):
    """The arguments of a statement executed once for each of them."""


class PreparedWrite(_OnCursor):
    """An INSERT, UPDATE or DELETE compiled once per dialect and run on the driver's own
    cursor, as :class:`Prepared` runs a SELECT: for the few writes every audited change
    makes (the audit event and its chain head). Parameters go through each column type's
    bind processor, as they would through SQLAlchemy. An INSERT names every column of the
    table: each execution gives every value (None for NULL), none is defaulted.
    """

    def run(self, connection: Connection, params: dict[str, Any]) -> int:
        """Execute once; the count of rows it changed."""
        compiled = self._for(connection.dialect)
        return compiled.on_cursor(connection, compiled.arguments(params), _rowcount)

    def run_each(self, connection: Connection, params: list[dict[str, Any]]) -> None:
        """Execute once for each of ``params`` (the driver's executemany)."""
        compiled = self._for(connection.dialect)
        compiled.on_cursor(connection, _Each(map(compiled.arguments, params)), _rowcount)


def _rowcount(cursor: Any) -> int:
    return cursor.rowcount


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


# Engine options of the pool, which the hot readers' engines (no pool) refuse.
_POOL_ONLY = frozenset(
    {"pool_pre_ping", "pool_size", "max_overflow", "pool_timeout", "pool_use_lifo"}
)

# Connections a forked child inherited from its parent: referenced, so that garbage
# collection never closes them under the parent (see Database.forget_inherited).
_INHERITED: list[Connection] = []


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
        # Connections for :meth:`hot_reader`, kept idle by it rather than by a pool:
        # one kind for reads of any shape, one for point lookups (:meth:`hot_read`).
        hot = {k: v for k, v in options.items() if k not in _POOL_ONLY}
        self._hot: dict[bool, Engine] = {}
        self._idle: dict[bool, deque[Connection]] = {}
        for lookups in (False, True):
            engine = create_engine(url, **{**hot, "poolclass": NullPool})
            if engine.dialect.name == "sqlite":
                _sqlite_setup(engine)
            else:
                _postgresql_setup(engine, custom_plans=not lookups)
            self._hot[lookups] = engine.execution_options(isolation_level="AUTOCOMMIT")
            self._idle[lookups] = deque()
        if self.engine.dialect.name == "sqlite":
            _sqlite_setup(self.engine)
        else:
            _postgresql_setup(self.engine)
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
    def hot_reader(self, *, snapshot: bool = False, lookups: bool = False) -> Iterator[Connection]:
        """A connection kept open for reads, in autocommit: each statement reads committed
        state on its own, or, with ``snapshot`` on SQLite, all of them one snapshot
        (PostgreSQL's reads are READ COMMITTED either way).

        For the read paths every request takes (checking a token, a decision, a SCIM
        read): no pool checkout, ORM session or BEGIN and ROLLBACK per call, which cost
        more than the statements. Only reads may run on it. ``lookups`` is for point
        lookups by unique keys, which PostgreSQL may then run on generic plans. Idle
        connections wait in a stack, as many as were ever used at once, up to
        :attr:`HOT_IDLE`.
        """
        idle = self._idle[lookups]
        try:
            connection = idle.pop()
        except IndexError:
            connection = self._hot[lookups].connect()
        began = snapshot and self.dialect == "sqlite"
        try:
            if began:
                # On the driver's connection: the statement needs none of SQLAlchemy's
                # per-execution work, which cost more than it (see Prepared).
                connection.connection.dbapi_connection.execute("BEGIN DEFERRED")
            yield connection
        finally:
            if connection.invalidated:
                connection.close()
            else:
                if began:
                    raw = connection.connection.dbapi_connection
                    if raw.in_transaction:  # SQLite may have ended it on an error
                        raw.execute("ROLLBACK")
                if len(idle) < self.HOT_IDLE:
                    idle.append(connection)
                else:
                    connection.close()

    HOT_IDLE = 32

    def hot_read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work``, point lookups only, on a :meth:`hot_reader`.

        A connection the server dropped (a restart) means every idle one is gone too:
        they are all replaced and ``work`` runs once more, as a pool's pre-ping would.
        """
        try:
            with self.hot_reader(lookups=True) as connection:
                return work(connection)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            self._drop_idle()
            with self.hot_reader(lookups=True) as connection:
                return work(connection)

    def _drop_idle(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

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
            raise DatabaseError(self._explain(exc)) from None

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
            raise DatabaseError(self._explain(exc)) from None
        head = self.head()
        if current != head:
            raise DatabaseError(f"schema at revision {current}, expected {head}")

    def _explain(self, exc: SQLAlchemyError) -> str:
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
        for idle in self._idle.values():
            _INHERITED.extend(idle)
            idle.clear()

    def dispose(self) -> None:
        self._drop_idle()
        self.engine.dispose()
        for engine in self._hot.values():
            engine.engine.dispose()
