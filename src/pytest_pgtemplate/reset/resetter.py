"""The plugin's own connection to one worker database, and a reset from start to end.

A reset: one query (``sql.check_query``; after a test with WAL marks, the procedure behind
``sql.CALL_CHECK`` runs it); if another connection is still inside a transaction, it gets a
grace to finish (an active query and one idle in its transaction alike) and is ended after it;
a prepared transaction left behind is rolled back; then the restore undoes what the marks name,
in one transaction (after a test, as superuser, the check's own statement did so already when
it found only rows of small tables and moved sequences). When a test changed the schema nothing
is restored: the caller replaces the database with a fresh clone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ..errors import ResetError
from ..naming import DatabaseTag, quote_literal
from . import sql
from .check import (
    WAL_BYTES_PER_SEQUENCE,
    WAL_MIN_SEQUENCES,
    Backend,
    Changes,
    Watch,
    check,
)
from .layout import Layout
from .restore import RestoreStats, restore, settings_statements

LEAK_GRACE = 1.0
"""Seconds a transaction still open when the reset starts may take to finish (a background
task's last query on a busy machine) before its connection is ended and reported."""
_LOCK_TIMEOUT = "10s"
_POLL_FIRST, _POLL_MAX = 0.001, 0.02  # seconds between looks at pg_stat_activity, doubling
_OPEN = """
SELECT pid, state, left(query, 120) AS query FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend' AND coalesce(state, 'idle') <> 'idle'
"""
_SETTINGS = """
SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE s.setrole::regrole::text END AS role, s.setconfig
FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
WHERE d.datname = current_database() ORDER BY s.setrole
"""


@dataclass(frozen=True)
class ResetOutcome:
    """What a reset (or the check before a test) did.

    ``leaked``: connections still inside a transaction after the grace, ended. ``schema``: what
    DDL the test ran; nothing was restored, the caller must replace the database. ``stats``:
    what the restore undid (None when nothing changed). ``databases``: databases that appeared
    on the server meanwhile (watched on the plugin's own server only).
    """

    leaked: tuple[Backend, ...] = ()
    schema: tuple[str, ...] = ()
    stats: RestoreStats | None = None
    prepared: tuple[str, ...] = ()
    databases: tuple[str, ...] = ()
    from_wal: bool = field(default=False, compare=False)
    """How, not what: the sequences compared were those the WAL named (not every one)."""

    @property
    def schema_changed(self) -> bool:
        return bool(self.schema)


@dataclass(frozen=True)
class Known:
    """What a worker knows of its template: kept across reconnects and re-clones."""

    layout: Layout
    settings: tuple[str, ...]  # the statements that bring back the clone's own settings


async def open_resetter(
    dsn: str,
    database: str,
    timeout: float,
    known: Known | None = None,
    *,
    fresh: bool = True,
    leak_grace: float = LEAK_GRACE,
    watch_databases: bool = False,
) -> Resetter:
    """Connect to a worker database, refusing any database the plugin did not create.

    ``fresh``: the database is a clone no test has touched yet; its own state (settings) is
    recorded now as what every reset brings back.
    """
    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        await _refuse_foreign(conn, database)
        # A worker database needs no durability: the reset's COMMIT need not wait for a flush.
        # Generic plans from the first execution: the server plans a parameterised statement
        # (the catalog probe, without superuser) anew for each of its first five executions.
        await conn.execute(
            f"SET lock_timeout = '{_LOCK_TIMEOUT}'; SET synchronous_commit = off;"
            " SET plan_cache_mode = force_generic_plan"
        )
        if known is None:
            known = Known(await _layout(conn, database), ())
        if fresh:
            known = Known(known.layout, await _record_fresh(conn, database))
        if known.layout.superuser:
            # The restore runs as replica (foreign keys skipped). Setting it per transaction
            # would change the setting twice per restore, and each change empties the
            # session's plan cache (ResetPlanCache): the next check is planned anew, at
            # ~1 ms. Held for the session, the restore's SET LOCAL changes nothing.
            await conn.execute("SET session_replication_role = replica")
    except BaseException:
        await conn.close()
        raise
    wal_from = None
    if fresh and known.layout.wal_marks:  # any change to the clone's sequences comes later
        wal_from = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
    return Resetter(
        conn, database, known, Watch.of(known.layout), leak_grace, watch_databases, wal_from
    )


async def _refuse_foreign(conn: asyncpg.Connection, database: str) -> None:
    comment = await conn.fetchval(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
        " WHERE datname = current_database()"
    )
    marker = DatabaseTag.from_comment(comment)
    if (
        marker is None
        or marker.kind != "worker"
        or await conn.fetchval("SELECT current_database()") != database
    ):
        raise ResetError(
            f"refusing to reset database {database!r}: it carries no pytest-pgtemplate worker "
            "marker, so the plugin did not create it"
        )


async def _layout(conn: asyncpg.Connection, database: str) -> Layout:
    text = None
    if await conn.fetchval("SELECT to_regclass('pgtemplate.state') IS NOT NULL"):
        text = await conn.fetchval("SELECT value FROM pgtemplate.state WHERE key = 'layout'")
    if text is None:
        raise ResetError(
            f"{database} has no change tracking (schema pgtemplate): its template was not built "
            "by this version of pytest-pgtemplate; drop old templates with `pgtemplate gc "
            "--templates`"
        )
    return Layout.from_json(text)


async def _record_fresh(conn: asyncpg.Connection, database: str) -> tuple[str, ...]:
    """Every row of a clone no test touched is a seed row: the rows a test writes from here on
    are newer than the oldest transaction running now (``sql.ROWS_SINCE``)."""
    await conn.execute(
        "UPDATE pgtemplate.state SET value = CASE key WHEN 'settings' THEN pgtemplate.settings()"
        f" WHEN 'database' THEN ({sql.DATABASE})"
        f" WHEN '{sql.ROWS_SINCE}' THEN pg_snapshot_xmin(pg_current_snapshot())::text"
        f" WHEN '{sql.ROWS_BY}' THEN '0' ELSE pg_current_xact_id()::text END"
        " WHERE key IN ('settings', 'databases_seen', 'database',"
        f" '{sql.ROWS_SINCE}', '{sql.ROWS_BY}')"
    )
    return tuple(settings_statements(database, await conn.fetch(_SETTINGS)))


@dataclass
class Resetter:
    """Owns the plugin's own connection to one worker database (never to anything else)."""

    conn: asyncpg.Connection
    database: str
    known: Known
    watch: Watch
    leak_grace: float = LEAK_GRACE
    watch_databases: bool = False
    wal_from: int | None = None
    """With WAL marks: the WAL before this point was read by the last complete reset (or
    predates a fresh clone). None: the next check compares every sequence."""
    wal_bytes_per_sequence: int = WAL_BYTES_PER_SEQUENCE
    wal_min_sequences: int = WAL_MIN_SEQUENCES
    restore_in_check: bool = True
    """After a test, a superuser's check restores the plain cases itself (one round trip)."""
    _truncate_all: str | None = field(default=None, init=False)

    @property
    def layout(self) -> Layout:
        return self.known.layout

    @property
    def uses_wal(self) -> bool:
        """The check after a test reads moved sequences from the WAL (the one before a test
        compares those of marked tables either way)."""
        return self.layout.wal_marks and len(self.layout.sequences) >= self.wal_min_sequences

    def describe(self) -> str:
        """The change tracking this resetter relies on, for the end-of-run line."""
        if not self.layout.superuser:
            return "change tracking: statement triggers, catalog probe, every sequence compared"
        sequences = "sequences from the WAL"
        if not self.uses_wal:
            sequences = "every sequence compared"
            if self.layout.wal_marks:
                sequences += f" (fewer than {self.wal_min_sequences}: cheaper than the WAL)"
        return f"change tracking: statement triggers, event triggers, {sequences}"

    async def reset(self, strategy: str) -> ResetOutcome:
        """After a test: every sequence is compared (with WAL marks, those the WAL names), the
        marks say the rest."""
        if strategy == "truncate-all":
            return await self._truncate_everything()
        return await self._check_and_restore(all_sequences=True)

    async def ensure_pristine(
        self, alongside: Coroutine[Any, Any, None] | None = None
    ) -> ResetOutcome:
        """Before a test: undo what ran since the last reset (tests that did not ask for the
        database may have written to it). Sequences of marked tables are compared.

        ``alongside`` (the claim's liveness round trip, on another connection) runs during the
        check, which writes nothing; its error is raised before anything is restored.
        """
        return await self._check_and_restore(all_sequences=False, alongside=alongside)

    async def _check_and_restore(
        self, *, all_sequences: bool, alongside: Coroutine[Any, Any, None] | None = None
    ) -> ResetOutcome:
        changes = await self._first_check(all_sequences, alongside)
        leaked: tuple[Backend, ...] = ()
        if changes.busy:
            leaked = await self.end_leaked_backends()
            changes = await self._check(all_sequences)
        prepared = changes.prepared
        if prepared:
            await self.rollback_prepared()
            changes = await self._check(all_sequences)
        if changes.busy or changes.prepared:
            raise ResetError("another connection keeps writing to the database during its reset")
        if changes.schema:
            return ResetOutcome(leaked, changes.schema, prepared=prepared)
        stats = None
        if changes.restore_needed:
            stats = await restore(
                self.conn, self.layout, changes, self.watch, settings=self.known.settings
            )
        if changes.databases:
            await self.conn.execute(
                "UPDATE pgtemplate.state SET value = pg_current_xact_id()::text"
                " WHERE key = 'databases_seen'"
            )
        # Only now: a check whose finds were not restored (another connection was busy, and
        # the check ran again) must not move the start past them; nor does a check without WAL.
        if changes.wal_upto is not None:
            self.wal_from = changes.wal_upto
        return ResetOutcome(leaked, (), stats, prepared, changes.databases, changes.from_wal)

    async def _first_check(
        self, all_sequences: bool, alongside: Coroutine[Any, Any, None] | None
    ) -> Changes:
        if alongside is None:
            return await self._check(all_sequences)
        # Both run to their end whatever fails: no query may be left running on either connection.
        found, other = await asyncio.gather(
            self._check(all_sequences), alongside, return_exceptions=True
        )
        if isinstance(other, BaseException):
            raise other
        if isinstance(found, BaseException):
            raise found
        assert isinstance(found, Changes)
        return found

    async def _check(self, all_sequences: bool, *, restore: bool | None = None) -> Changes:
        """``restore``: whether the check may restore what it finds (by default, after a test
        as ``restore_in_check`` says; never before one: the claim is verified meanwhile)."""
        if restore is None:
            restore = all_sequences and self.restore_in_check
        return await check(
            self.conn,
            self.layout,
            self.watch,
            all_sequences=all_sequences,
            watch_databases=self.watch_databases,
            wal=all_sequences and self.uses_wal,
            wal_from=self.wal_from,
            wal_budget=self.wal_bytes_per_sequence * len(self.layout.sequences),
            restore=restore,
        )

    async def end_leaked_backends(self, grace: float | None = None) -> tuple[Backend, ...]:
        """End connections still inside a transaction after ``grace`` seconds (default
        ``leak_grace``); they would block the reset. Idle pooled connections are harmless."""
        grace = self.leak_grace if grace is None else grace
        rows = await self.conn.fetch(_OPEN)
        deadline, delay = time.monotonic() + grace, _POLL_FIRST
        while rows and time.monotonic() < deadline:
            await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, _POLL_MAX)
            rows = await self.conn.fetch(_OPEN)
        if rows:
            pids = [row["pid"] for row in rows]
            await self.conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM unnest($1::int[]) pid", pids
            )
        return tuple(Backend(row["pid"], row["state"] or "", row["query"] or "") for row in rows)

    async def rollback_prepared(self) -> tuple[str, ...]:
        """Prepared transactions on this database: they hold locks, and DROP DATABASE refuses."""
        rows = await self.conn.fetch(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
        )
        for row in rows:
            await self.conn.execute(f"ROLLBACK PREPARED {quote_literal(row['gid'])}")
        return tuple(row["gid"] for row in rows)

    async def _truncate_everything(self) -> ResetOutcome:
        """``truncate-all``: the classic recipe; the check before the next test brings the seed
        rows back (the marks of every table TRUNCATEd stay for it)."""
        leaked = await self.end_leaked_backends()
        if self.layout.truncate_all:
            # As the classic recipe runs it: ON TRUNCATE triggers fire (origin, not replica).
            await self.conn.execute(
                "BEGIN; SET LOCAL session_replication_role = origin;"
                f" TRUNCATE {', '.join(self.layout.truncate_all)} CASCADE; COMMIT"
            )
        return ResetOutcome(leaked)

    async def close(self) -> None:
        await self.conn.close(timeout=5)


__all__ = ["Backend", "Known", "ResetOutcome", "Resetter", "open_resetter"]
