"""The hot path's own database access, kept for a measured reason: reads on connections
kept open outside any pool, and statements run on the driver's own cursor. Used only by
the paths every request takes (a token check, a decision, a SCIM operation's reads) and
by the writes of an audited change and a SCIM create; everything else runs through
SQLAlchemy (its pool, compiled cache and pre-ping).

Measured against SQLAlchemy's own path on one machine, old and new trees alternating,
medians (docs/performance.md, "Hot path: SQLAlchemy's own path against this module"):

- :class:`HotConnections` against a pooled checkout (a pool of its own in autocommit,
  pre-ping on PostgreSQL), bench/decision_api.py with 5,000 users, 3 rounds: on SQLite
  the service reached 0.59x of the bare Flask ceiling against 0.42x, one connection's
  p50 0.79 against 0.87 ms; on PostgreSQL one connection's p50 1.07-1.09 against
  1.34-1.50 ms (the pre-ping is a round trip per checkout, two per request).
- SCIM filtered reads on the main pool in a read transaction, bench/scim_filters.py,
  3 rounds of 30: within noise on SQLite; on PostgreSQL two of the three cheapest
  filters took about twice as long (p50 4.63 against 9.69 ms, 2.02 against 4.80 ms).
- :class:`Prepared` against ``Connection.execute`` (SQLAlchemy's compiled cache),
  bench/decide_in_process.py on SQLite: 0.057-0.061 against 0.114-0.123 ms a decision.
- :class:`PreparedWrite` (and :class:`Prepared`) against ``Connection.execute``,
  bench/scim_create_cpu.py, 3 x 300 creates: CPU 2.66-2.74 against 2.95-2.97 ms a
  create, the writers' lock held 0.65-0.80 against 0.83-1.03 ms.

A statement is compiled once per dialect; parameters and results go through each column
type's own bind and result processors, so values are the Python objects SQLAlchemy would
give; driver errors are raised as SQLAlchemy's, and a dropped connection is invalidated.
"""

from __future__ import annotations

from collections import deque, namedtuple
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, InvalidRequestError
from sqlalchemy.sql.dml import UpdateBase

T = TypeVar("T")

# Engine options of a pool, which the hot connections' engine (no pool) refuses.
POOL_ONLY = frozenset(
    {"pool_pre_ping", "pool_size", "max_overflow", "pool_timeout", "pool_use_lifo"}
)

# Connections a forked child inherited from its parent: referenced, so that garbage
# collection never closes them under the parent (HotConnections.forget_inherited).
_INHERITED: list[Connection] = []


class HotConnections:
    """Connections kept open for the hot path's reads, in autocommit: no pool
    checkout, pre-ping, ``BEGIN`` or ``ROLLBACK`` per read, which cost more than the
    statements. Idle connections wait in a stack, as many as were ever used at once, up
    to :attr:`IDLE`; a server that starts a thread per request still uses one.
    """

    IDLE = 32

    def __init__(self, engine: Engine) -> None:
        """``engine``: on ``NullPool``, set up for its dialect; read in autocommit here."""
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._idle: deque[Connection] = deque()

    @contextmanager
    def connection(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """An idle connection, or a new one. Each statement reads committed state on its
        own, or with ``snapshot`` on SQLite all of them one snapshot (PostgreSQL's reads
        are READ COMMITTED either way). Only reads may run on it."""
        idle = self._idle
        try:
            connection = idle.pop()
        except IndexError:
            connection = self._engine.connect()
        began = snapshot and connection.dialect.name == "sqlite"
        try:
            if began:  # on the driver's connection: SQLAlchemy's execute costs more
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
                if len(idle) < self.IDLE:
                    idle.append(connection)
                else:
                    connection.close()

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a connection. One the server dropped (a restart) means every
        idle one is gone too: they are all replaced and ``work`` runs once more, as a
        pool's pre-ping would."""
        try:
            with self.connection() as connection:
                return work(connection)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            self.drop_idle()
            with self.connection() as connection:
                return work(connection)

    def drop_idle(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def forget_inherited(self) -> None:
        """In a forked child: keep the parent's idle connections referenced, never used
        (closing them would end the parent's sessions too)."""
        _INHERITED.extend(self._idle)
        self._idle.clear()

    def dispose(self) -> None:
        self.drop_idle()
        self._engine.engine.dispose()


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

    Rows are named tuples. A dropped connection is invalidated, so that
    :meth:`HotConnections.run` recovers from it as from any other statement.
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

    def arguments_each(
        self, rows: list[dict[str, Any]], shared: dict[str, Any], encoded: frozenset[str]
    ) -> _Each:
        """The driver's parameters for each of ``rows``, with ``shared`` (the same for every
        row, bound once) and ``encoded`` names (given in the driver's form: not bound)."""
        base = self.arguments_shared(shared)
        required = self.required.difference(shared)
        binders = [(n, p) for n, p in self.binders if n not in shared and n not in encoded]
        order = self.order
        each = _Each()
        for row in rows:
            if not required <= row.keys():
                missing = sorted(required.difference(row))
                raise InvalidRequestError(f"no value for bind parameter(s) {missing}")
            values = {**base, **row}
            for name, processor in binders:
                if name in values:
                    values[name] = processor(values[name])
            each.append(values if order is None else [values[n] for n in order])
        return each

    def arguments_shared(self, shared: dict[str, Any]) -> dict[str, Any]:
        values = {**self.constants, **shared}
        for name, processor in self.binders:
            if name in shared:
                values[name] = processor(values[name])
        return values

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

    def run_each(
        self,
        connection: Connection,
        params: Sequence[dict[str, Any]],
        *,
        shared: dict[str, Any] | None = None,
        encoded: frozenset[str] = frozenset(),
    ) -> int:
        """Execute once for each of ``params`` (the driver's executemany); the count of rows
        changed in all (both drivers sum it; -1 where one cannot tell). ``shared``: values
        the same for every execution, bound once; ``encoded``: names whose values each of
        ``params`` gives as the driver takes them, not bound again."""
        compiled = self._for(connection.dialect)
        arguments = compiled.arguments_each(params, shared or {}, encoded)
        if len(arguments) == 1:  # the driver's execute: executemany costs more for one
            return compiled.on_cursor(connection, arguments[0], _rowcount)
        return compiled.on_cursor(connection, arguments, _rowcount)


def _rowcount(cursor: Any) -> int:
    return cursor.rowcount
