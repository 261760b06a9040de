"""Putting a worker database back to the template's state after a test."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from ._errors import ResetError
from ._naming import Marker
from ._snapshot import Snapshot, capture, restore

_LOCK_TIMEOUT = "10s"

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

_LEAKED_BACKENDS = """
SELECT pid, state, left(query, 120) AS query FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend' AND coalesce(state, '') <> 'idle'
"""


@dataclass(frozen=True)
class LeakedBackend:
    pid: int
    state: str
    query: str


async def open_resetter(
    dsn: str, database: str, timeout: float, snapshot: Snapshot | None
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
    return Resetter(conn, database, snapshot or await capture(conn))


@dataclass
class Resetter:
    """Owns the plugin's own connection to one worker database (never to anything else)."""

    conn: asyncpg.Connection
    database: str
    snapshot: Snapshot
    _tables: list[str] | None = field(default=None, init=False)

    async def reset(self, strategy: str) -> list[LeakedBackend]:
        """Reset with ``strategy``; returns the stray backends it had to end first."""
        leaked = await self.end_leaked_backends()
        if strategy in ("truncate", "rollback"):  # after a rollback: catches other connections
            await restore(self.conn, self.snapshot)
        elif strategy == "truncate-all":
            await self._truncate_all()
        else:
            raise ResetError(f"unknown reset strategy {strategy!r}")
        return leaked

    async def end_leaked_backends(self) -> list[LeakedBackend]:
        """Idle pooled connections are harmless; ones inside a transaction would block the reset."""
        rows = await self.conn.fetch(_LEAKED_BACKENDS)
        for row in rows:
            await self.conn.execute("SELECT pg_terminate_backend($1)", row["pid"])
        return [LeakedBackend(row["pid"], row["state"] or "", row["query"] or "") for row in rows]

    async def close(self) -> None:
        await self.conn.close(timeout=5)

    async def _truncate_all(self) -> None:
        if self._tables is None:
            self._tables = [row["qualified"] for row in await self.conn.fetch(_USER_TABLES)]
        if self._tables:
            await self.conn.execute(f"TRUNCATE {', '.join(self._tables)} CASCADE")
