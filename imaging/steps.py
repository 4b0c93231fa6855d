"""SQL work written once, run two ways.

A piece of database work (index an instance, write its audit record) is a generator of
:class:`Step`: it yields a statement with its parameters and is sent back what the statement
gave — the first row for a look-up (``fetch=True``), the row count otherwise — and returns its
result. It does no I/O itself, so the same code runs:

* :func:`run_async` on an SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncConnection`, one
  awaited statement at a time (PostgreSQL, and anything else);
* :meth:`SqliteRunner.run` on a plain :class:`sqlite3.Connection` in a worker thread. On SQLite
  (the embedded default) each awaited statement is a trip to aiosqlite's thread and back through
  the event loop, which costs more than the statement; a runner does the whole piece of work in
  the one trip the caller already makes to a worker thread, with the statements compiled once by
  the same dialect and bound through the same type processors SQLAlchemy would use.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections import namedtuple
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import SelectBase

__all__ = ["SqliteRunner", "Step", "Work", "run_async", "sqlite_runner"]

T = TypeVar("T")
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Step:
    statement: Executable
    #: One set of parameters, or a list of them (executemany; the row count is the sum).
    params: Params
    #: Send back the first row (None if there is none) instead of the row count.
    fetch: bool = False


Work = Generator[Step, Any, T]


async def run_async(connection: AsyncConnection, work: Work[T]) -> T:
    """Run ``work`` on ``connection``, awaiting each statement."""
    reply: Any = None
    try:
        while True:
            step = work.send(reply)
            result = await connection.execute(step.statement, step.params)
            if step.fetch:
                reply = result.first()
            else:
                assert isinstance(result, CursorResult)
                reply = result.rowcount
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    #: Columns given no value whose Python-side default (or onupdate) fills them, by name.
    generated: tuple[tuple[str, Callable[[], Any]], ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    #: For a SELECT: the row's type, and how each column's value is read back.
    row: Any
    results: tuple[Callable[[Any], Any] | None, ...]

    def bind(self, params: Mapping[str, Any]) -> list[Any]:
        if self.generated:
            params = {**{name: make() for name, make in self.generated}, **params}
        out = []
        for name, default, process in zip(self.names, self.defaults, self.processors, strict=True):
            value = params.get(name, default)
            out.append(value if process is None else process(value))
        return out

    def read(self, raw: Sequence[Any] | None) -> Any:
        if raw is None:
            return None
        values = (v if p is None else p(v) for v, p in zip(raw, self.results, strict=True))
        return self.row._make(values)


_RUNNERS: weakref.WeakKeyDictionary[Dialect, SqliteRunner] = weakref.WeakKeyDictionary()


def sqlite_runner(dialect: Dialect) -> SqliteRunner:
    """The runner of ``dialect`` (an engine's), made once: it keeps the compiled statements."""
    runner = _RUNNERS.get(dialect)
    if runner is None:
        runner = _RUNNERS[dialect] = SqliteRunner(dialect)
    return runner


class SqliteRunner:
    """Runs :data:`Work` on a :class:`sqlite3.Connection`, blocking; for a worker thread.

    The caller owns the connection and its transaction (nothing here begins or commits), and
    must be the connection's only user for the duration, as when it holds it checked out from
    the engine's pool. Statements are compiled by ``dialect`` once, on first use, per set of
    parameter names.
    """

    def __init__(self, dialect: Dialect) -> None:
        if dialect.paramstyle != "qmark":
            raise ValueError(f"a {dialect.name} dialect with {dialect.paramstyle} parameters")
        self.dialect = dialect
        self._prepared: dict[tuple[int, tuple[str, ...]], tuple[Executable, _Prepared]] = {}

    def run(self, connection: sqlite3.Connection, work: Work[T]) -> T:
        reply: Any = None
        try:
            while True:
                step = work.send(reply)
                reply = self._execute(connection, step)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _execute(self, connection: sqlite3.Connection, step: Step) -> Any:
        many = not isinstance(step.params, Mapping)
        rows: Sequence[Mapping[str, Any]] = (
            step.params if many else [step.params]  # type: ignore[list-item,assignment]
        )
        if not rows:
            return 0
        prepared = self._prepare(step.statement, rows[0])
        if many:
            cursor = connection.executemany(prepared.sql, [prepared.bind(p) for p in rows])
        else:
            cursor = connection.execute(prepared.sql, prepared.bind(rows[0]))
        try:
            if step.fetch:
                return prepared.read(cursor.fetchone())
            return cursor.rowcount
        finally:
            cursor.close()

    def _prepare(self, statement: Executable, params: Mapping[str, Any]) -> _Prepared:
        key = (id(statement), tuple(sorted(params)))
        held = self._prepared.get(key)
        if held is not None and held[0] is statement:
            return held[1]
        clause = cast(ClauseElement, statement)
        compiled = clause.compile(dialect=self.dialect, column_keys=list(key[1]))
        assert isinstance(compiled, SQLCompiler)
        if compiled.literal_execute_params or compiled.post_compile_params:
            # SQLAlchemy renders these into the SQL at each execution (IN lists, literal
            # separators): write the statement with plain parameters or literal SQL instead.
            raise ValueError("a statement with parameters rendered at execution time")
        names = tuple(compiled.positiontup or ())
        binds = [compiled.binds[n] for n in names]
        generated = tuple(
            (c.key, _default_of(c.default if c in compiled.insert_prefetch else c.onupdate))
            for c in [*compiled.insert_prefetch, *compiled.update_prefetch]
            if c.key not in params
        )
        made = {name for name, _ in generated}
        for name, bind in zip(names, binds, strict=True):
            if name not in params and name not in made and bind.value is None and bind.required:
                raise KeyError(f"no value for the required parameter {name!r}")
        row_type: Any = None
        results: tuple[Callable[[Any], Any] | None, ...] = ()
        if isinstance(statement, SelectBase):
            columns = list(statement.selected_columns)
            row_type = _row_type([str(c.key) for c in columns])
            results = tuple(
                c.type.dialect_impl(self.dialect).result_processor(self.dialect, None)
                for c in columns
            )
        prepared = _Prepared(
            sql=compiled.string,
            names=names,
            defaults=tuple(b.value for b in binds),
            generated=generated,
            processors=tuple(
                b.type.dialect_impl(self.dialect).bind_processor(self.dialect) for b in binds
            ),
            row=row_type,
            results=results,
        )
        self._prepared[key] = (statement, prepared)
        return prepared


def _default_of(default: Any) -> Callable[[], Any]:
    """A column's Python-side default as a function of nothing (SQLAlchemy wraps a plain
    callable default in one that takes the execution context, which these never use)."""
    if default is None or not (default.is_scalar or default.is_callable):
        raise ValueError(f"a column default the runner cannot compute: {default!r}")
    if default.is_scalar:
        value = default.arg
        return lambda: value
    fn = default.arg
    return lambda: fn(None)


def _row_type(names: list[str]) -> Any:
    return namedtuple("Row", names)
