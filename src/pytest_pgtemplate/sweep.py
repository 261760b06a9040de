"""Which of the plugin's databases belong to a live run, and dropping those that do not.

A live process holds an advisory lock per database it owns, and a shared one per template it
clones, on its lease connection (``lease``). The listing's ``alive`` column reads pg_locks, for
display only: a database is dropped only while this connection holds its owner's lock itself
(``pg_try_advisory_lock`` succeeded), which a live owner makes impossible, at the moment of the
DROP, not a moment before. The databases are listed first and judged second, so a worker that
claims and creates its database meanwhile is simply not in the list.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from . import databases
from .claim import LIVENESS_CLASS, TEMPLATE_USE_CLASS, build_lock_key, lock_key
from .naming import PREFIX, DatabaseTag
from .report import Problem
from .server.admin import DRIVER_ERRORS
from .server.connection import Server

__all__ = [
    "LIVENESS_CLASS",
    "TEMPLATE_USE_CLASS",
    "DropResult",
    "Entry",
    "dead_workers",
    "drop_entries",
    "drop_quietly",
    "inventory",
    "lock_key",
    "surplus_templates",
    "sweepable",
]

_INVENTORY = """
SELECT d.datname AS name, shobj_description(d.oid, 'pg_database') AS comment,
       CASE WHEN $2 THEN pg_database_size(d.oid) ELSE 0 END AS size,
       d.datistemplate AND NOT d.datallowconn AS finished
FROM pg_database d WHERE d.datname LIKE $1 ORDER BY d.datname
"""
_HELD_KEYS = """
SELECT DISTINCT classid::bigint AS class, objid::bigint AS key FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 2 AND granted AND classid::bigint IN ($1, $2)
"""


@dataclass(frozen=True)
class Entry:
    """One of the plugin's databases, as ``pgtemplate list`` shows it."""

    name: str
    marker: DatabaseTag
    size: int
    alive: bool
    finished: bool = True
    """Templates: marked as the build's last step; False for a build that died (or runs)."""

    @property
    def kind(self) -> str:
        return self.marker.kind


async def inventory(admin: asyncpg.Connection, *, sizes: bool = False) -> list[Entry]:
    """Every database carrying the plugin's marker; unmarked look-alikes are not ours.

    ``sizes`` walks every database's files: only ``pgtemplate list`` pays for it.
    """
    rows = await admin.fetch(_INVENTORY, PREFIX.replace("_", "\\_") + "%", sizes)
    held = {
        (row["class"], row["key"])
        for row in await admin.fetch(_HELD_KEYS, LIVENESS_CLASS, TEMPLATE_USE_CLASS)
    }
    entries = []
    for row in rows:
        marker = DatabaseTag.from_comment(row["comment"]) or _unmarked(row["name"])
        if marker is not None:
            alive = _alive(marker, row["name"], held)
            entries.append(Entry(row["name"], marker, row["size"], alive, row["finished"]))
    return entries


_TEMPLATE_NAME = re.compile(r"pgtemplate_tpl_[0-9a-f]{20}")
_WORKER_NAME = re.compile(r"pgtemplate_([0-9a-f]{12})_([a-z0-9_]+?)(_spare|_empty\d+)?")


def _unmarked(name: str) -> DatabaseTag | None:
    """A template whose builder died between CREATE DATABASE and its COMMENT, or a worker's."""
    if _TEMPLATE_NAME.fullmatch(name):
        return DatabaseTag("template")
    return _unmarked_worker(name)


def _unmarked_worker(name: str) -> DatabaseTag | None:
    """A worker database (or spare) whose process died between CREATE DATABASE and its COMMENT.

    The two cannot share a transaction. The worker takes its liveness lock before creating the
    database, so an unmarked one with exactly this name shape is ours, and alive only while
    that lock is held (spares and empty databases: their worker's lock). Kept copies
    (``_failedN``) and templates are never guessed at.
    """
    match = _WORKER_NAME.fullmatch(name)
    if match is None or re.search(r"_failed\d+$", name):
        return None
    owner = name.removesuffix(match[3]) if match[3] else name
    return DatabaseTag("worker", run_id=match[1], owner=owner)


def _alive(marker: DatabaseTag, name: str, held: set[tuple[int, int]]) -> bool:
    if marker.kind == "template":
        return (TEMPLATE_USE_CLASS, lock_key(name)) in held
    return (LIVENESS_CLASS, lock_key(marker.owner or name)) in held


def dead_workers(entries: list[Entry]) -> list[Entry]:
    """Worker databases (and spares) whose run is gone; kept copies wait for ``gc --kept``."""
    return [entry for entry in entries if entry.kind == "worker" and not entry.alive]


def abandoned_builds(entries: list[Entry]) -> list[Entry]:
    """Templates never marked finished: a build that died (a live build holds its build lock)."""
    return [entry for entry in entries if entry.kind == "template" and not entry.finished]


def sweepable(entries: list[Entry]) -> list[Entry]:
    """What every run's sweep drops: dead runs' worker databases and abandoned builds."""
    return dead_workers(entries) + abandoned_builds(entries)


def surplus_templates(entries: list[Entry], project: str, keep: int) -> list[Entry]:
    """Unused templates of ``project`` beyond the ``keep`` newest."""
    templates = [e for e in entries if e.kind == "template" and e.marker.project == project]
    templates.sort(key=lambda e: e.marker.created, reverse=True)
    return [entry for entry in templates[keep:] if not entry.alive]


@dataclass
class DropResult:
    dropped: list[Entry] = field(default_factory=list)
    alive: list[Entry] = field(default_factory=list)
    """Claimed by a live run when the drop was due: left alone."""
    refused: list[str] = field(default_factory=list)
    """One line each: what the server would not let this role drop, and why."""


async def drop_entries(admin: asyncpg.Connection, entries: list[Entry]) -> DropResult:
    """Drop each entry only while holding its owner's lock; never raises for one entry."""
    result = DropResult()
    for entry in entries:
        try:
            async with _claimed(admin, entry) as claimed:
                if not claimed:
                    result.alive.append(entry)
                elif await _still_ours(admin, entry):
                    await databases.drop(admin, entry.name)
                    result.dropped.append(entry)
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError) as exc:
            result.refused.append(f"{entry.name}: {exc}")
    return result


@asynccontextmanager
async def _claimed(admin: asyncpg.Connection, entry: Entry) -> AsyncIterator[bool]:
    """Hold the lock a live owner would hold; kept copies have no owner (``gc --kept``)."""
    if entry.kind == "kept":
        yield True
        return
    if entry.kind == "template" and not entry.finished:
        lock_class, key = build_lock_key(entry.name)  # a build in progress holds it
    elif entry.kind == "template":
        lock_class, key = TEMPLATE_USE_CLASS, lock_key(entry.name)
    else:
        lock_class, key = LIVENESS_CLASS, lock_key(entry.marker.owner or entry.name)
    claimed = await admin.fetchval("SELECT pg_try_advisory_lock($1, $2)", lock_class, key)
    try:
        yield bool(claimed)
    finally:
        if claimed:
            await admin.execute("SELECT pg_advisory_unlock($1, $2)", lock_class, key)


async def _still_ours(admin: asyncpg.Connection, entry: Entry) -> bool:
    """Right before the DROP, under the owner's lock: the database is still as it was listed.

    The same marker (or still none, for a crash leftover), and for a template the same finished
    state: a build that was running at the listing may have finished before its lock was free.
    """
    row = await admin.fetchrow(
        "SELECT shobj_description(oid, 'pg_database') AS comment,"
        " datistemplate AND NOT datallowconn AS finished FROM pg_database WHERE datname = $1",
        entry.name,
    )
    if row is None or (entry.kind == "template" and row["finished"] != entry.finished):
        return False
    if row["comment"] is None:
        return _unmarked(entry.name) is not None
    return DatabaseTag.from_comment(row["comment"]) == entry.marker


def drop_quietly(server: Server, choose: Callable[[list[Entry]], list[Entry]], what: str) -> None:
    """List, choose, drop; what fails is a line at the end of the run, never a test failure."""
    try:
        admin = server.admin()
        chosen = choose(server.run(inventory(admin)))
        others = [e for e in chosen if not server.claim.holds(e.kind, e.name, e.marker.owner)]
        result = server.run(drop_entries(admin, others))
    except DRIVER_ERRORS as exc:
        server.report.record(Problem(f"{what} failed: {type(exc).__name__}: {exc}"))
        return
    for line in result.refused:
        server.report.record(Problem(f"{what}: left {line}"))
