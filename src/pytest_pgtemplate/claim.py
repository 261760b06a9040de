"""This process's claim on the server: one dedicated connection that holds its advisory locks.

A worker holds a session-level advisory lock named after each database it owns (liveness) and
a shared one on the template it clones (template use); the server releases them when the
connection ends, however the process ends. Other runs judge "dead" by taking those locks, so a
lost lease would let them drop this run's databases: it is taken again before any further
database work, or the run stops with an error.

The same connection does the process's admin work (CREATE, DROP, sweeps): one connection per
worker fewer on a busy server. A session can always take a lock it holds itself, so this
process's own sweeps skip what this claim holds (``holds``) instead of trusting the lock there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.engine import URL

from .errors import ConfigurationError, PgTemplateError
from .server.admin import connect
from .urls import redacted

LIVENESS_CLASS = 0x70677476  # "pgtv"
TEMPLATE_USE_CLASS = 0x70677475  # "pgtu"
BUILD_CLASS = 0x70677470  # "pgtp": held by the process building a template, across machines

# A lease sits idle between tests: no server-side timeout may end it.
_SESSION_SETUP = (
    "SET idle_session_timeout = 0; SET idle_in_transaction_session_timeout = 0; "
    "SET application_name = 'pytest-pgtemplate lease'"
)


class ClaimLostError(PgTemplateError):
    """The lease's locks could not be taken again: another process claims this run's names."""


def lock_key(name: str) -> int:
    """A non-negative int4, so it reads back unchanged from pg_locks.objid (an oid)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF


def build_lock_key(name: str) -> tuple[int, int]:
    """The advisory lock (two int4 keys) that serialises builds of template ``name``."""
    return BUILD_CLASS, int.from_bytes(
        hashlib.sha256(name.encode()).digest()[:4], "big", signed=True
    )


@dataclass
class Claim:
    url: URL
    connect_timeout: float
    owned: set[str] = field(default_factory=set)
    """Databases (by name) whose liveness lock this process holds."""
    templates: set[str] = field(default_factory=set)
    """Templates this process clones (shared template-use locks)."""
    renewals: int = 0
    _conn: asyncpg.Connection | None = field(default=None, repr=False)

    async def ensure(self, *, verify: bool = False) -> None:
        """Before any database work: a lost connection is replaced and every lock taken again.

        A connection the server ended shows as closed only once the client has read the end;
        ``verify`` asks the server (one round trip), which the check before each test does.
        """
        if self._conn is not None and not self._conn.is_closed():
            if not verify or await self._answers():
                return
            self._conn.terminate()
        await self.adopt(await connect(self.url, self.connect_timeout))

    async def adopt(self, conn: asyncpg.Connection) -> None:
        """Make ``conn`` the claim's connection and take every lock (again) on it."""
        self._conn = conn
        await self._conn.execute(_SESSION_SETUP)
        await _refuse_transaction_pooling(self._conn, self.url)
        for name in sorted(self.owned):
            if not await self._try_lock(LIVENESS_CLASS, name):
                raise ClaimLostError(
                    f"the connection that held this run's claim on {name} was lost, and another "
                    "process has claimed it since; stop this run and start it again"
                )
        for name in sorted(self.templates):
            await self._conn.execute(
                "SELECT pg_advisory_lock_shared($1, $2)", TEMPLATE_USE_CLASS, lock_key(name)
            )
        if self.owned or self.templates:
            self.renewals += 1

    @property
    def connection(self) -> asyncpg.Connection:
        """For the process's admin work; call ``ensure`` first."""
        assert self._conn is not None, "ensure() first"
        return self._conn

    def holds(self, kind: str, name: str, owner: str) -> bool:
        """Whether this claim keeps the database alive: a sweep here must not judge it."""
        return name in self.templates if kind == "template" else (owner or name) in self.owned

    async def claim(self, name: str) -> None:
        """Claim a database name before creating it; a live claim elsewhere is a collision."""
        await self.ensure()
        if name in self.owned:
            return
        if not await self._try_lock(LIVENESS_CLASS, name):
            raise PgTemplateError(
                f"database {name} belongs to another live run; run ids must be unique per run"
            )
        self.owned.add(name)

    async def use_template(self, name: str) -> None:
        """Taken before the template is looked up, so a prune cannot drop it in between."""
        await self.ensure()
        if name in self.templates:
            return
        assert self._conn is not None
        await self._conn.execute(
            "SELECT pg_advisory_lock_shared($1, $2)", TEMPLATE_USE_CLASS, lock_key(name)
        )
        self.templates.add(name)

    async def release_template(self, name: str) -> None:
        if name in self.templates and self._conn is not None and not self._conn.is_closed():
            await self._conn.execute(
                "SELECT pg_advisory_unlock_shared($1, $2)", TEMPLATE_USE_CLASS, lock_key(name)
            )
        self.templates.discard(name)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()

    def terminate_for_test(self) -> None:
        """Simulate a lost connection (tests only: what a server restart or a proxy does)."""
        if self._conn is not None:
            self._conn.terminate()

    async def _answers(self) -> bool:
        assert self._conn is not None
        try:
            await self._conn.fetchval("SELECT 1", timeout=self.connect_timeout)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        except asyncpg.InternalClientError:
            return False
        return True

    async def _try_lock(self, lock_class: int, name: str) -> bool:
        assert self._conn is not None
        return bool(
            await self._conn.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", lock_class, lock_key(name)
            )
        )


async def _refuse_transaction_pooling(conn: asyncpg.Connection, url: URL) -> None:
    """Session advisory locks need one server session per client connection."""
    first = await conn.fetchval("SELECT pg_backend_pid()")
    second = await conn.fetchval("SELECT pg_backend_pid()")
    if first != second:
        raise ConfigurationError(
            f"{redacted(url)} hands successive statements to different server sessions (a "
            "transaction-pooling proxy such as PgBouncer with pool_mode=transaction?). "
            "pytest-pgtemplate keeps its claims in session advisory locks: point pgtemplate_url "
            "at the server itself or at a session-pooling port."
        )
