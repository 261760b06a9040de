"""SQLAlchemy engines for tests: one per database URL and event loop, with clean connections.

asyncpg connections belong to the loop that opened them, so an async engine lives as long as
its pytest-asyncio loop (``EnginePool``), keyed by the URL it was asked for: a conftest
``pg_database`` that returns another database gets engines on that database. A pooled
connection keeps session state between tests (a temp table, a ``SET``, values a ``CACHE 20``
sequence handed it, a ``LISTEN``, an advisory lock); the idle connections a test checked out
are reset at its end, and any other the first time a test checks it out, in one round trip and
without ``DEALLOCATE ALL``, which would break the drivers' statement caches. A connection no
test checked out since it was last reset is left as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import util as sa_util
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

T = TypeVar("T")

CLEAN_SESSION = (
    "CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); SET SESSION AUTHORIZATION DEFAULT;"
    " RESET ALL; DISCARD TEMP; DISCARD SEQUENCES;"
    " SELECT FROM pg_prepared_statements WHERE from_sql"
)
"""``DISCARD ALL`` but for the protocol-level prepared statements drivers cache. Its last
statement counts those a test made with SQL ``PREPARE``; only then does ``DEALLOCATE_SQL`` run
(a ``DO`` block is compiled at every call)."""
DEALLOCATE_SQL = (
    "DO $$ DECLARE n text; BEGIN"
    " FOR n IN SELECT name FROM pg_prepared_statements WHERE from_sql LOOP"
    " EXECUTE format('DEALLOCATE %I', n); END LOOP; END $$"
)
_NONE_PREPARED = "SELECT 0"
_USED_IN = "pgtemplate_used_in"
"""The epoch (the test) that last checked a connection out; gone once it is cleaned."""
_await: Callable[[Any], Any] = getattr(sa_util, "await_", None) or sa_util.await_only


class LoopRunner(Protocol):
    """What pytest-asyncio's scoped runners (``asyncio.Runner``) offer."""

    def run(self, coro: Coroutine[Any, Any, T]) -> T: ...

    def get_loop(self) -> asyncio.AbstractEventLoop: ...


class Database(Protocol):
    """What an engine needs of the database it was asked for (``pg_database``'s object)."""

    @property
    def url(self) -> str: ...

    @property
    def sync_url(self) -> str: ...


def generation(database: object) -> int:
    """Grows when the database is replaced (a re-clone): pooled connections point at nothing."""
    return int(getattr(database, "generation", 0))


def epoch(database: object) -> int:
    """Grows at every test's start: a connection a test left checked out is cleaned when a
    later test checks it out."""
    return int(getattr(database, "epoch", 0))


@dataclass
class _Entry:
    engine: Any  # AsyncEngine or Engine
    database: object
    generation: int
    cleaning: bool = False
    """At a test's end: each connection checked out since it was last cleaned is cleaned."""
    returned: bool = False
    """A connection that needs the clean went back to the pool since the last clean."""


@dataclass
class EnginePool:
    """The async engines of one event loop (``runner``; None: the test has no loop, and every
    connection is closed on return), or the sync engines of the run (``sync``)."""

    runner: LoopRunner | None = None
    sync: bool = False
    _entries: dict[str, _Entry] = field(default_factory=dict)
    closes_with_loop: bool = False
    """A function-scoped loop's: its connections close when the test ends, clean or not."""

    def engine(self, database: Database) -> Any:
        url = database.sync_url if self.sync else database.url
        entry = self._entries.get(url)
        if entry is None:
            entry = self._entries[url] = _Entry(self._create(url), database, generation(database))
            _clean_on_reuse(entry)
            if (not self.closes_with_loop and self.runner is not None) or self.sync:
                add = getattr(database, "add_cleaner", None)  # its reset cleans them too
                if add is not None:
                    add(lambda: self.clean_idle(database))
        elif entry.generation != generation(database):
            _sync_side(entry.engine).dispose(close=False)
            entry.generation = generation(database)
        entry.database = database
        return entry.engine

    def async_engine(self, database: Database) -> AsyncEngine:
        engine: AsyncEngine = self.engine(database)
        return engine

    def sync_engine(self, database: Database) -> Engine:
        engine: Engine = self.engine(database)
        return engine

    def run(self, coro: Coroutine[Any, Any, T]) -> T | None:
        """Run ``coro`` on the pool's loop when that loop is idle; otherwise drop it."""
        if self.runner is not None and not self.runner.get_loop().is_closed():
            return self.runner.run(coro)
        coro.close()
        return None

    def close_connections(self) -> None:
        """At the end of the loop: its connections go, the engines stay usable."""
        for entry in self._entries.values():
            if self.sync:
                entry.engine.dispose()
            elif self.run(entry.engine.dispose()) is None:
                _sync_side(entry.engine).dispose(close=False)

    def clean_idle(self, database: Database) -> None:
        """At a test's end, the pooled connections it leaves lose their session state, so none
        outlives it (an advisory lock would block the next test's other connections)."""
        entry = self._entries.get(database.sync_url if self.sync else database.url)
        if entry is None or isinstance(_sync_side(entry.engine).pool, NullPool):
            return
        if entry.generation != generation(database):  # re-cloned: the pool points at nothing
            _sync_side(entry.engine).dispose(close=False)
            entry.generation = generation(database)
            return
        if not entry.returned:  # every idle connection is clean: no hop to the loop
            return
        entry.cleaning, entry.returned = True, False
        try:
            if self.sync:
                _clean_each(entry.engine)
            else:
                self.run(_clean_each_async(entry.engine))
        except BaseException:  # cut short (Ctrl-C): what it did not reach waits for the next
            entry.returned = True
            raise
        finally:
            entry.cleaning = False

    def on_loop(self, runner: LoopRunner) -> EnginePool:
        """The same engines on another loop (function-scoped loops never overlap)."""
        return EnginePool(runner, self.sync, self._entries, closes_with_loop=True)

    def _create(self, url: str) -> Any:
        if self.sync:
            return create_engine(url, pool_size=2, max_overflow=8)
        if self.runner is None:
            return create_async_engine(url, poolclass=NullPool)
        return create_async_engine(url, pool_size=2, max_overflow=8)


def _sync_side(engine: Any) -> Engine:
    return engine if isinstance(engine, Engine) else engine.sync_engine


def _clean_on_reuse(entry: _Entry) -> None:
    """A connection is dirty from its first checkout to its next clean. The clean comes at the
    end of the test that checked it out, or at its first checkout in a later test when it was
    not idle then (a wider fixture held it). A fresh connection is clean (SQLAlchemy empties
    ``info`` when it replaces one)."""
    pool = _sync_side(entry.engine).pool

    def checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if entry.cleaning:
            if record.info.pop(_USED_IN, None) is not None:
                _clean_or_replace(dbapi_connection)
            return
        now = epoch(entry.database)
        if record.info.get(_USED_IN, now) != now:
            _clean_or_replace(dbapi_connection)
        record.info[_USED_IN] = now

    def checked_in(dbapi_connection: Any, record: Any) -> None:
        if _USED_IN in record.info:
            entry.returned = True

    event.listen(pool, "checkout", checked_out)
    event.listen(pool, "checkin", checked_in)


def _idle(engine: Any) -> int:
    pool = _sync_side(engine).pool
    return int(pool.checkedin()) if hasattr(pool, "checkedin") else 0


def _clean_each(engine: Engine) -> None:
    """Check every idle connection out at once (each checkout cleans it), then back in."""
    held = []
    try:
        for _ in range(_idle(engine)):
            held.append(engine.connect())
    finally:
        for connection in held:
            connection.close()


async def _clean_each_async(engine: AsyncEngine) -> None:
    held = []
    try:
        for _ in range(_idle(engine)):
            held.append(await engine.connect())
    finally:
        for connection in held:
            await connection.close()


def _clean_or_replace(dbapi_connection: Any) -> None:
    try:
        clean(dbapi_connection)
    except Exception as exc:  # a connection the server ended: the pool replaces it
        raise DisconnectionError(f"pytest-pgtemplate: {exc}") from exc


def clean(dbapi_connection: Any) -> None:
    """Reset one driver connection's session state (asyncpg through SQLAlchemy's adapter, or
    psycopg); it is outside a transaction when the pool hands it out."""
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    if hasattr(driver, "get_server_pid"):  # asyncpg: the status of the last statement
        if _await(driver.execute(CLEAN_SESSION)) != _NONE_PREPARED:
            _await(driver.execute(DEALLOCATE_SQL))
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(CLEAN_SESSION)
        while cursor.nextset():  # psycopg: on the first statement's result; the count is last
            pass
        if cursor.statusmessage != _NONE_PREPARED:
            cursor.execute(DEALLOCATE_SQL)
    finally:
        cursor.close()
    dbapi_connection.commit()
