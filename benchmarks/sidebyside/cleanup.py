"""Leave the server and the machine as they were: this run's databases, servers and files.

A database is this run's when its name starts with the run's prefix (``bench_<hex>_``), or
when the plugin's marker comment ties it to this run: a template whose project (the suite's
directory name) starts with the prefix, or a worker database cloned from such a template.
Called once every pytest process of the run has ended, so nothing it drops is in use.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from .runner import Context


def clean_run(ctx: Context, keep: bool) -> None:
    """Everything a run leaves: its servers' caches, its databases, its scratch directory."""
    for purpose in ("embedded", "reuse"):
        stopped = remove_server_cache(ctx.server_cache(purpose))
        if stopped:
            print(f"stopped a leftover server: pids {stopped}", file=sys.stderr)
    dropped = drop_run_databases(ctx.admin_url, ctx.prefix())
    print(f"cleanup: dropped {len(dropped)} database(s) of this run", file=sys.stderr)
    if keep:
        print(f"scratch directory kept: {ctx.scratch}", file=sys.stderr)
    else:
        shutil.rmtree(ctx.scratch, ignore_errors=True)


_DATABASES = "SELECT datname, shobj_description(oid, 'pg_database') AS comment FROM pg_database"


def drop_run_databases(admin_url: str, prefix: str) -> list[str]:
    """Drop every database of this run; returns their names."""
    return asyncio.run(_drop_run_databases(admin_url, prefix))


async def _drop_run_databases(admin_url: str, prefix: str) -> list[str]:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        rows = await conn.fetch(_DATABASES)
        markers = {row["datname"]: _marker(row["comment"]) for row in rows}
        templates = {
            name
            for name, marker in markers.items()
            if marker.get("kind") == "template"
            and str(marker.get("project", "")).startswith(prefix)
        }
        doomed = [
            name
            for name, marker in markers.items()
            if name.startswith(prefix) or marker.get("template") in templates
        ]
        for name in [*doomed, *sorted(templates)]:
            await _drop(conn, name)
        return [*doomed, *sorted(templates)]
    finally:
        await conn.close()


def _marker(comment: str | None) -> dict[str, Any]:
    try:
        fields = json.loads(comment or "")["pgtemplate"]
    except (ValueError, KeyError, TypeError):
        return {}
    return fields if isinstance(fields, dict) else {}


async def _drop(conn: asyncpg.Connection, name: str) -> None:
    """Templates refuse DROP until unmarked; FORCE ends any straggling connection."""
    quoted = '"' + name.replace('"', '""') + '"'
    await conn.execute(f"ALTER DATABASE {quoted} WITH IS_TEMPLATE false")
    await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")


def remove_server_cache(cache: Path) -> list[int]:
    """Stop any server still running from ``cache`` (there should be none), then delete it.

    Returns the pids it had to stop, so the report can say the plugin left one behind.
    """
    stopped = [pid for pid in _postmaster_pids(cache) if _stop(pid)]
    shutil.rmtree(cache, ignore_errors=True)
    return stopped


def _postmaster_pids(cache: Path) -> list[int]:
    if not cache.exists():
        return []
    pids = []
    for pidfile in cache.rglob("postmaster.pid"):
        first = pidfile.read_text().splitlines()[:1]
        if first and first[0].strip().isdigit():
            pids.append(int(first[0]))
    return pids


def _stop(pid: int) -> bool:
    """SIGINT is PostgreSQL's fast shutdown; SIGKILL only if it has not gone in 10 s."""
    if not _alive(pid):
        return False
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
