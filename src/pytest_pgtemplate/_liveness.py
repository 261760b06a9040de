"""Which of the plugin's databases belong to a live run, across processes and machines.

A worker holds a session-level advisory lock keyed by its database's name for as long as its
admin connection lives; the server releases it when the process ends, however it ends (even
SIGKILL, even on another machine). A database whose owner's lock is free is dead. A cloner also
holds a shared lock on its template, so pruning never drops a template that a live run clones.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import asyncpg

from . import _databases
from ._errors import PgTemplateError
from ._naming import PREFIX, Marker

LIVENESS_CLASS = 0x70677476  # "pgtv"
TEMPLATE_USE_CLASS = 0x70677475  # "pgtu"

_INVENTORY = """
SELECT d.datname AS name, shobj_description(d.oid, 'pg_database') AS comment,
       CASE WHEN $2 THEN pg_database_size(d.oid) ELSE 0 END AS size
FROM pg_database d WHERE d.datname LIKE $1 ORDER BY d.datname
"""
_HELD_KEYS = """
SELECT DISTINCT classid::bigint AS class, objid::bigint AS key FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 2 AND granted AND classid::bigint IN ($1, $2)
"""


def lock_key(name: str) -> int:
    """A non-negative int4, so it reads back unchanged from pg_locks.objid (an oid)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class Entry:
    """One of the plugin's databases, as ``pgtemplate list`` shows it."""

    name: str
    marker: Marker
    size: int
    alive: bool

    @property
    def kind(self) -> str:
        return self.marker.kind


async def hold_liveness(admin: asyncpg.Connection, owner: str) -> None:
    """Claim ``owner`` for this process; a live claim by another process is a name collision."""
    if not await admin.fetchval(
        "SELECT pg_try_advisory_lock($1, $2)", LIVENESS_CLASS, lock_key(owner)
    ):
        raise PgTemplateError(
            f"database {owner} belongs to another live run; run ids must be unique per run"
        )


async def hold_template_use(admin: asyncpg.Connection, template: str) -> None:
    await admin.execute(
        "SELECT pg_advisory_lock_shared($1, $2)", TEMPLATE_USE_CLASS, lock_key(template)
    )


async def inventory(admin: asyncpg.Connection, *, sizes: bool = False) -> list[Entry]:
    """Every database carrying the plugin's marker; unmarked look-alikes are not ours.

    ``sizes`` walks every database's files: only ``pgtemplate list`` pays for it.
    """
    held = {
        (row["class"], row["key"])
        for row in await admin.fetch(_HELD_KEYS, LIVENESS_CLASS, TEMPLATE_USE_CLASS)
    }
    entries = []
    for row in await admin.fetch(_INVENTORY, PREFIX.replace("_", "\\_") + "%", sizes):
        marker = Marker.from_comment(row["comment"]) or _unmarked_worker(row["name"])
        if marker is not None:
            entries.append(
                Entry(row["name"], marker, row["size"], _alive(marker, row["name"], held))
            )
    return entries


_WORKER_NAME = re.compile(r"pgtemplate_([0-9a-f]{12})_([a-z0-9_]+?)(_spare)?")


def _unmarked_worker(name: str) -> Marker | None:
    """A worker database (or spare) whose process died between CREATE DATABASE and its COMMENT.

    The two cannot share a transaction. The worker takes its liveness lock before creating the
    database, so an unmarked one with exactly this name shape is ours, and alive only while
    that lock is held. Kept copies (``_failedN``) and templates are never guessed at.
    """
    match = _WORKER_NAME.fullmatch(name)
    if match is None or re.search(r"_failed\d+$", name):
        return None
    owner = name.removesuffix("_spare") if match[3] else name
    return Marker("worker", run_id=match[1], owner=owner)


def _alive(marker: Marker, name: str, held: set[tuple[int, int]]) -> bool:
    if marker.kind == "template":
        return (TEMPLATE_USE_CLASS, lock_key(name)) in held
    return (LIVENESS_CLASS, lock_key(marker.owner or name)) in held


def dead_workers(entries: list[Entry]) -> list[Entry]:
    """Worker databases (and spares) whose run is gone; kept copies wait for ``gc --kept``."""
    return [entry for entry in entries if entry.kind == "worker" and not entry.alive]


def surplus_templates(entries: list[Entry], project: str, keep: int) -> list[Entry]:
    """Unused templates of ``project`` beyond the ``keep`` newest."""
    templates = [e for e in entries if e.kind == "template" and e.marker.project == project]
    templates.sort(key=lambda e: e.marker.created, reverse=True)
    return [entry for entry in templates[keep:] if not entry.alive]


async def drop_entries(admin: asyncpg.Connection, entries: list[Entry]) -> None:
    for entry in entries:
        if entry.kind == "template":
            key = lock_key(entry.name)
            if not await admin.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", TEMPLATE_USE_CLASS, key
            ):
                continue  # a run started cloning it since the inventory
            try:
                await _databases.drop(admin, entry.name)
            finally:
                await admin.execute("SELECT pg_advisory_unlock($1, $2)", TEMPLATE_USE_CLASS, key)
        else:
            await _databases.drop(admin, entry.name)
