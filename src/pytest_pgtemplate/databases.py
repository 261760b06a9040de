"""Creating, cloning, marking and dropping databases on the admin connection."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from .naming import DatabaseTag, quote_ident, quote_literal
from .server.admin import ServerInfo

_CLONE_RETRY_SECONDS = 30.0
_LIST_SETTINGS = frozenset(
    {"search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries"}
)


async def state(admin: asyncpg.Connection, name: str) -> str:
    """``missing``, ``finished`` (marked template) or ``unfinished`` (a crash leftover)."""
    row = await admin.fetchrow(
        "SELECT datistemplate AND NOT datallowconn AS finished FROM pg_database WHERE datname = $1",
        name,
    )
    if row is None:
        return "missing"
    return "finished" if row["finished"] else "unfinished"


async def read_marker(admin: asyncpg.Connection, name: str) -> DatabaseTag | None:
    comment = await admin.fetchval(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", name
    )
    return DatabaseTag.from_comment(comment)


async def create_empty(admin: asyncpg.Connection, name: str, marker: DatabaseTag) -> None:
    await admin.execute(f"CREATE DATABASE {quote_ident(name)}")
    await set_marker(admin, name, marker)


async def set_marker(admin: asyncpg.Connection, name: str, marker: DatabaseTag) -> None:
    await admin.execute(
        f"COMMENT ON DATABASE {quote_ident(name)} IS {quote_literal(marker.to_comment())}"
    )


async def mark_finished(admin: asyncpg.Connection, name: str) -> None:
    """The last step of a build: from now on the template is trusted and cannot be connected to."""
    await terminate_connections(admin, name)
    await admin.execute(
        f"ALTER DATABASE {quote_ident(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
    )


async def terminate_connections(admin: asyncpg.Connection, name: str) -> list[int]:
    rows = await admin.fetch(
        "SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )
    return [row["pid"] for row in rows]


async def drop_own(admin: asyncpg.Connection, name: str, run_id: str) -> None:
    """Drop a database this run created: its marker (or its unmarked name) must say so now."""
    marker = await read_marker(admin, name)
    ours = marker.run_id == run_id if marker else name.startswith(f"pgtemplate_{run_id}_")
    if ours:
        await drop(admin, name)


async def drop(admin: asyncpg.Connection, name: str) -> None:
    """Drop even a template with live connections (a template must be unmarked first)."""
    exists = await admin.fetchval("SELECT datistemplate FROM pg_database WHERE datname = $1", name)
    if exists is None:
        return
    if exists:
        await admin.execute(f"ALTER DATABASE {quote_ident(name)} WITH IS_TEMPLATE false")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    except asyncpg.InsufficientPrivilegeError:
        # FORCE must end every session, which a role may not do to another role's (an
        # autovacuum worker's): a plain DROP cancels autovacuum itself.
        await _drop_when_free(admin, name)


async def _drop_when_free(admin: asyncpg.Connection, name: str) -> None:
    deadline = time.monotonic() + _CLONE_RETRY_SECONDS
    while True:
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
            return
        except asyncpg.ObjectInUseError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@dataclass(frozen=True)
class CloneOptions:
    strategy: str | None
    """``FILE_COPY``, ``WAL_LOG`` or None (PostgreSQL 14 and older have no STRATEGY clause)."""
    durable: bool = False
    """False: ``synchronous_commit = off`` on the clone, which never needs to survive a crash."""

    server_major: int = 0
    file_copy_method: str | None = None
    """PostgreSQL 18+: ``clone`` or ``copy``, SET on the admin session before a FILE_COPY."""
    clone_note: str = ""
    """Why ``file_copy_method = clone`` is (not) used: the reflink evidence, or the fsync rule."""
    fsync: bool = False

    def describe(self) -> str:
        """For the end-of-run line: the method and why it was chosen."""
        if self.strategy is None:
            return f"PostgreSQL {self.server_major} has no STRATEGY"
        why = "fsync on: fewer checkpoints" if self.strategy == "WAL_LOG" else "fsync off"
        if self.fsync and self.strategy == "FILE_COPY":
            why = "fsync on"
        text = f"{self.strategy}, {why}"
        if self.file_copy_method == "clone":
            return f"{text}, file_copy_method=clone: {self.clone_note}"
        return f"{text}; no file_copy_method=clone: {self.clone_note}" if self.clone_note else text


CLONE_DESPITE_FSYNC_BYTES = 512 << 20
"""With fsync on, FILE_COPY + clone beats WAL_LOG from about 250 MB (``clone_size.py``); the
checkpoints' cost grows with what else is dirty, so the switch sits at twice that."""


def clone_options(
    server: ServerInfo, *, durable: bool = False, template_bytes: int | None = None
) -> CloneOptions:
    """FILE_COPY pays two checkpoints, cheap without fsync; WAL_LOG wins on a durable disk.

    PostgreSQL 18's ``file_copy_method = clone`` turns FILE_COPY's file copies into reflinks,
    used only where ``server.reflink`` proves the data directory is here and reflinks. With fsync
    off it costs the same whatever the template's size. With fsync on, FILE_COPY's checkpoints
    flush the whole cluster, which WAL_LOG beats on small templates and a reflink clone beats on
    large ones, so the template's size (``template_bytes``) decides there (the figures:
    docs/benchmarks.md, ``benchmarks/clone_size.py``).
    """

    def options(strategy: str | None, method: str | None = None, note: str = "") -> CloneOptions:
        return CloneOptions(strategy, durable, server.major, method, note, server.fsync)

    if server.major < 15:
        return options(None)
    strategy = "WAL_LOG" if server.fsync else "FILE_COPY"
    if server.major < 18:
        return options(strategy)
    if not server.reflink:
        return options(strategy, "copy", server.reflink_note)
    if server.fsync:
        size = f"{template_bytes / 2**20:.0f} MB" if template_bytes is not None else "size unknown"
        if template_bytes is None or template_bytes < CLONE_DESPITE_FSYNC_BYTES:
            return options(strategy, "copy", f"{server.reflink_note}, but fsync on and {size}")
        return options("FILE_COPY", "clone", f"{server.reflink_note}, template {size}")
    return options(strategy, "clone", server.reflink_note)


async def clone(
    admin: asyncpg.Connection, template: str, name: str, marker: DatabaseTag, options: CloneOptions
) -> None:
    """``CREATE DATABASE name TEMPLATE template``, retried while the template is briefly busy."""
    strategy = f" STRATEGY {options.strategy}" if options.strategy else ""
    statement = f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)}{strategy}"
    if options.strategy == "FILE_COPY" and options.file_copy_method:
        await admin.execute(f"SET file_copy_method = {options.file_copy_method}")
    deadline = time.monotonic() + _CLONE_RETRY_SECONDS
    delay = 0.01
    while True:
        try:
            await admin.execute(statement)
            break
        except asyncpg.ObjectInUseError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
    await set_marker(admin, name, marker)
    await copy_database_settings(admin, template, name)
    if not options.durable:
        await admin.execute(f"ALTER DATABASE {quote_ident(name)} SET synchronous_commit = off")


async def copy_database_settings(admin: asyncpg.Connection, source: str, target: str) -> None:
    """``ALTER DATABASE ... SET`` is in pg_db_role_setting, which CREATE DATABASE does not copy."""
    rows = await admin.fetch(
        "SELECT unnest(s.setconfig) AS setting FROM pg_db_role_setting s"
        " JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = $1 AND s.setrole = 0",
        source,
    )
    for row in rows:
        key, _, value = row["setting"].partition("=")
        # List settings are stored already quoted element by element ("My Schema", public).
        rendered = value if key.lower() in _LIST_SETTINGS else quote_literal(value)
        await admin.execute(f"ALTER DATABASE {quote_ident(target)} SET {key} = {rendered}")
