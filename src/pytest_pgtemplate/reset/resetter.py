"""Putting a worker database back to the template's state after a test, or before one."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg

from ..errors import ResetError
from ..naming import Marker
from .snapshot import RestoreStats, Snapshot, capture, restore

_LOCK_TIMEOUT = "10s"
# Seconds a transaction still open when the reset starts may take to finish before its
# connection is ended and reported (the pgtemplate_leak_grace setting).
LEAK_GRACE = 0.2
_POLL_FIRST, _POLL_MAX = 0.001, 0.02  # seconds between looks at pg_stat_activity, doubling

_USER_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname) AS qualified
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND c.relname <> 'alembic_version'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1
"""

# Connections inside a transaction. ``stale``: idle in it for longer than the grace ($1 s)
# already, a leak that waiting cannot end. pg_stat_activity is re-read per transaction.
_OPEN_BACKENDS = """
SELECT pid, state, left(query, 120) AS query,
       state LIKE 'idle in transaction%'
         AND clock_timestamp() - state_change > make_interval(secs => $1) AS stale
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend' AND coalesce(state, '') <> 'idle'
"""


@dataclass(frozen=True)
class LeakedBackend:
    pid: int
    state: str
    query: str


@dataclass(frozen=True)
class ResetOutcome:
    """What a reset (or the check before a test) did.

    ``leaked``: connections that were still inside a transaction after the grace and were ended.
    ``schema_changed``: the test changed the schema; the rows were NOT restored, the caller must
    replace the database with a fresh clone. ``stats``: what the exact restore undid (None for
    ``truncate-all``).
    """

    leaked: tuple[LeakedBackend, ...] = ()
    schema_changed: bool = False
    stats: RestoreStats | None = None


async def open_resetter(
    dsn: str,
    database: str,
    timeout: float,
    snapshot: Snapshot | None,
    *,
    leak_grace: float = LEAK_GRACE,
) -> Resetter:
    """Connect to a worker database, refusing any database the plugin did not create.

    Without a ``snapshot`` the database must be a pristine clone: its state is captured now.
    """
    conn = await asyncpg.connect(dsn, timeout=timeout)
    comment = await conn.fetchval(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
        " WHERE datname = current_database()"
    )
    marker = Marker.from_comment(comment)
    if (
        marker is None
        or marker.kind != "worker"
        or await conn.fetchval("SELECT current_database()") != database
    ):
        await conn.close()
        raise ResetError(
            f"refusing to reset database {database!r}: it carries no pytest-pgtemplate worker "
            "marker, so the plugin did not create it"
        )
    # A worker database needs no durability: the reset's COMMIT need not wait for a WAL flush
    # (visibility to other sessions is the same either way).
    await conn.execute(f"SET lock_timeout = '{_LOCK_TIMEOUT}'; SET synchronous_commit = off")
    return Resetter(conn, database, snapshot or await capture(conn), leak_grace)


@dataclass
class Resetter:
    """Owns the plugin's own connection to one worker database (never to anything else)."""

    conn: asyncpg.Connection
    database: str
    snapshot: Snapshot
    leak_grace: float = LEAK_GRACE
    _tables: list[str] | None = field(default=None, init=False)

    async def reset(self, strategy: str) -> ResetOutcome:
        """Reset after a test with ``strategy``, once stray transactions are over or ended."""
        leaked = await self.end_leaked_backends()
        if strategy in ("truncate", "rollback"):  # after a rollback: catches other connections
            stats = await restore(self.conn, self.snapshot)
            return ResetOutcome(leaked, stats.schema_changed, stats)
        if strategy == "truncate-all":
            await self._truncate_all()
            return ResetOutcome(leaked)
        raise ResetError(f"unknown reset strategy {strategy!r}")

    async def ensure_pristine(self) -> ResetOutcome:
        """Before a test: undo what ran since the last reset (tests that did not ask for the
        database may have written to it). One detection query when nothing changed."""
        leaked = await self.end_leaked_backends()
        stats = await restore(self.conn, self.snapshot)
        return ResetOutcome(leaked, stats.schema_changed, stats)

    async def end_leaked_backends(self, grace: float | None = None) -> tuple[LeakedBackend, ...]:
        """End connections still inside a transaction after ``grace`` seconds (default
        ``leak_grace``); they would block the reset. Idle pooled connections are harmless.

        A transaction about to finish (background work after the test returned) is given the
        grace; one idle in transaction for longer than the grace is a leak at once. Costs one
        query when nothing is open.
        """
        grace = self.leak_grace if grace is None else grace
        rows = await self.conn.fetch(_OPEN_BACKENDS, grace)
        deadline, delay = time.monotonic() + grace, _POLL_FIRST
        while any(not row["stale"] for row in rows) and time.monotonic() < deadline:
            await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, _POLL_MAX)
            rows = await self.conn.fetch(_OPEN_BACKENDS, grace)
        if rows:
            pids = [row["pid"] for row in rows]
            await self.conn.execute(
                "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", pids
            )
        return tuple(
            LeakedBackend(row["pid"], row["state"] or "", row["query"] or "") for row in rows
        )

    async def close(self) -> None:
        await self.conn.close(timeout=5)

    async def _truncate_all(self) -> None:
        if self._tables is None:
            self._tables = [row["qualified"] for row in await self.conn.fetch(_USER_TABLES)]
        if self._tables:
            await self.conn.execute(f"TRUNCATE {', '.join(self._tables)} CASCADE")
