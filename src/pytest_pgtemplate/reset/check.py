"""Asking a worker database what changed since its last reset: one query, marks read back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from .layout import Layout
from .schema import CatalogState, confirm, probe_query
from .sql import CALL_CHECK, check_query

_DDL = "SELECT what FROM pgtemplate.ddl WHERE kind = 'schema'"
WAL_MIN_SEQUENCES = 250
"""From how many sequences the check after a test reads the WAL instead of comparing them all:
the procedure's flush, commit and WAL read cost a few tenths of a millisecond more than the plain
query, comparing a sequence 1-2 us (``benchmarks/check_cost.py``). Per test, the WAL cost 0.2-0.35
ms more at 100 tables, about the same at 250, 0.6-0.8 ms less at 1000
(``benchmarks/sequence_marks.py``)."""
WAL_BYTES_PER_SEQUENCE = 128
"""How much WAL the check reads, per sequence, before comparing every sequence is cheaper:
pg_walinspect reads about 100 bytes a microsecond and a sequence compares in about 1.3 on the
machines CI runs on (``benchmarks/check_cost.py``): reading costs at most what comparing would."""


@dataclass
class Watch:
    """What a worker's checks compare against that moves on: without event triggers, the
    catalog reference (harmless catalog writes move it) and the materialized views' files."""

    catalog: CatalogState | None = None
    matview_files: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, layout: Layout) -> Watch:
        if layout.probe is None:
            return cls()
        probe = layout.probe
        catalog = CatalogState(probe.digest, list(probe.counts), probe.reference_xid)
        return cls(catalog, dict(probe.matviews))


@dataclass(frozen=True)
class Backend:
    """Another connection inside a transaction on the worker database."""

    pid: int
    state: str
    """``active`` (a query still running) or ``idle in transaction`` (it never committed)."""
    query: str


@dataclass(frozen=True)
class Changes:
    """What :func:`check` found; ``schema`` non-empty means: re-clone, restore nothing."""

    busy: tuple[Backend, ...] = ()
    prepared: tuple[str, ...] = ()
    schema: tuple[str, ...] = ()
    tables: tuple[tuple[int, int], ...] = ()  # (marked table, bytes of the tables it covers)
    sequences: tuple[int, ...] = ()
    refreshed: tuple[int, ...] = ()
    large_objects: bool = False
    settings: bool = False
    databases: tuple[str, ...] = ()
    wal_upto: int | None = None
    """Where the WAL was read up to (the next check starts there); None without WAL marks."""
    from_wal: bool = False
    """The WAL named the sequences compared; False: every sequence was."""
    restored: bool = False
    """The check restored what it found itself (tables and sequences only): nothing is left to
    do but to count it."""

    @property
    def restore_needed(self) -> bool:
        return bool(
            self.tables or self.sequences or self.refreshed or self.large_objects or self.settings
        )


async def check(
    conn: asyncpg.Connection,
    layout: Layout,
    watch: Watch,
    *,
    all_sequences: bool,
    watch_databases: bool = False,
    wal: bool = False,
    wal_from: int | None = None,
    wal_budget: int = 0,
    restore: bool = False,
) -> Changes:
    """The marks, and (without event triggers) the catalog probe first: DDL decides alone.

    ``wal`` (the layout has WAL marks): the procedure runs instead; ``wal_from`` is where the
    last reset's check read the WAL up to and ``wal_budget`` how many bytes of it are worth
    reading (else, or when None, every sequence is compared); ``all_sequences`` does not matter.
    ``restore`` (superuser): restore what it found in the same statement where it can
    (``Changes.restored``).
    """
    if wal and layout.wal_marks:
        return await _check_with_wal(
            conn, layout, wal_from, wal_budget, databases=watch_databases, restore=restore
        )
    catalog = watch.catalog
    if catalog is not None and layout.probe is not None:
        query = probe_query(layout.probe.watched)
        fired = await conn.fetchval(query, str(catalog.reference_xid), catalog.counts)
        if fired and await confirm(conn, catalog):
            return Changes(schema=("a change to the catalogs (CREATE, ALTER, DROP, COMMENT...)",))
    try:
        query = check_query(
            layout.superuser,
            all_sequences=all_sequences,
            databases=watch_databases,
            restore=restore,
        )
        rows = await conn.fetch(query)
    except asyncpg.PostgresError:  # a sequence or table it reads was dropped: DDL says so
        ddl = tuple(row[0] for row in await conn.fetch(_DDL))
        if ddl:
            return Changes(schema=ddl)
        raise
    changes = _parse(rows, layout)
    if catalog is not None and not changes.schema and watch.matview_files:
        return await _refreshed_without_event_triggers(conn, layout, watch, changes)
    return changes


async def _check_with_wal(
    conn: asyncpg.Connection,
    layout: Layout,
    wal_from: int | None,
    budget: int,
    *,
    databases: bool,
    restore: bool,
) -> Changes:
    try:
        row = await conn.fetchrow(CALL_CHECK, wal_from, budget, databases, restore)
    except asyncpg.PostgresError:  # as in check(): a relation it reads was dropped
        ddl = tuple(r[0] for r in await conn.fetch(_DDL))
        if ddl:
            return Changes(schema=ddl)
        raise
    assert row is not None
    kinds, rels, details = row["kinds"] or [], row["rels"] or [], row["details"] or []
    rows = [
        {"kind": k, "rel": r, "detail": d} for k, r, d in zip(kinds, rels, details, strict=True)
    ]
    return replace(_parse(rows, layout), wal_upto=row["upto"], from_wal=bool(row["wal"]))


def _parse(rows: Sequence[Mapping[str, Any]], layout: Layout) -> Changes:
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    tables = tuple((r["rel"], int(r["detail"] or 0)) for r in by_kind.get("table", []))
    unknown = tuple(
        f"a write to table oid {oid}, created since"
        for oid, _ in tables
        if not layout.knows_table(oid)
    )
    return Changes(
        busy=tuple(Backend(r["rel"], *_state(r["detail"])) for r in by_kind.get("busy", [])),
        prepared=tuple(r["detail"] for r in by_kind.get("prepared", [])),
        schema=tuple(r["detail"] for r in by_kind.get("schema", [])) + unknown,
        tables=tables,
        sequences=tuple(sorted({r["rel"] for r in by_kind.get("sequence", [])})),
        refreshed=tuple(sorted({r["rel"] for r in by_kind.get("refresh", [])})),
        large_objects="large_objects" in by_kind,
        settings="settings" in by_kind,
        databases=tuple(r["detail"] for r in by_kind.get("database", [])),
        restored="restored" in by_kind,
    )


def _state(detail: str) -> tuple[str, str]:
    state, _, query = (detail or "").partition(": ")
    return state, query


async def _refreshed_without_event_triggers(
    conn: asyncpg.Connection, layout: Layout, watch: Watch, changes: Changes
) -> Changes:
    """A plain REFRESH gives the view a new file; REFRESH CONCURRENTLY writes young rows. An
    unpopulated view cannot be read at all, so the files are looked at first."""
    files = watch.matview_files
    rows = await conn.fetch(
        "SELECT oid, relfilenode::bigint AS file, relispopulated FROM pg_class"
        " WHERE oid = ANY ($1::oid[])",
        [m.oid for m in layout.matviews],
    )
    found = {row["oid"] for row in rows if row["file"] != files.get(row["oid"])}
    readable = [m for m in layout.matviews if m.oid not in found and _populated(rows, m.oid)]
    ref = "(SELECT value::xid8::xid FROM pgtemplate.state WHERE key = 'ref')"
    probes = [
        f"SELECT {m.oid}::oid WHERE EXISTS (SELECT FROM {m.name} WHERE age(xmin) < age({ref}))"
        for m in readable
    ]
    if probes:
        found |= {row[0] for row in await conn.fetch("\nUNION ALL ".join(probes))}
    if not found:
        return changes
    return replace(changes, refreshed=tuple(sorted({*changes.refreshed, *found})))


def _populated(rows: list[asyncpg.Record], oid: int) -> bool:
    return any(row["oid"] == oid and row["relispopulated"] for row in rows)
