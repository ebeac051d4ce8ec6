"""Statements run on the driver's own cursor, for the few paths where SQLAlchemy's
per-execution work costs more than the statement: a token check, a decision, the
audit chain's writes and a SCIM create's rows.

Everything else runs through SQLAlchemy (its pool, compiled cache and pre-ping). These
two classes stay for a measured reason; the same statements through
``Connection.execute`` (A/B on one machine, alternating trees, medians; docs/performance.md,
"Hot path"):

- a decision (bench/decide_in_process.py, SQLite, 5,000 users x 10 connectors):
  0.057-0.061 ms here against 0.114-0.123 ms through SQLAlchemy, twice the cost;
- a SCIM create (bench/scim_create_cpu.py, 3 x 300 creates, three alternations):
  CPU 2.66-2.74 ms here against 2.95-2.97 ms, and the writers' lock held 0.65-0.80 ms
  against 0.83-1.03 ms.

A statement is compiled once per dialect; parameters and results go through each column
type's own bind and result processors, so values are the Python objects SQLAlchemy would
give; driver errors are raised as SQLAlchemy's, and a dropped connection is invalidated
so that the pool replaces it.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, InvalidRequestError
from sqlalchemy.sql.dml import UpdateBase

T = TypeVar("T")


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

    Rows are named tuples. On a dropped connection, the pool's pre-ping replaces it at
    the next checkout (:meth:`provisioning.database.Database.hot_read`).
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
