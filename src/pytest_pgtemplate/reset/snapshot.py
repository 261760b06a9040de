"""Exact per-test reset: record a pristine worker database once, then undo only what a test changed.

Measured (MEASUREMENTS.md, ``benchmarks/reset_overhead.py``): TRUNCATE costs 0.5-5 ms per table
whatever the rows, DELETE of a few rows ~0.05 ms, and one query finds which of 200 tables a test
touched in ~0.5 ms. So :func:`restore` asks one question, then in one transaction DELETEs what
changed (TRUNCATE for big tables), copies seed rows back and resets sequences. Changed means:
a table empty in the template has a visible row; a seeded table's row count differs or a visible
row is younger than ``Snapshot.reference_xid`` (frozen rows keep their raw xmin, subtransaction
xids are younger than their parent's; statistics counters lag, so they are not used); a sequence's
``(last_value, is_called)`` differs. Nobody else may write meanwhile (the resetter ends such
sessions first). DDL done by a test is detected in the same query (``reset.schema``), not undone:
:func:`restore` then reports ``schema_changed`` and leaves the database to be replaced.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..errors import ResetError
from ..naming import quote_ident, quote_literal
from .order import closure, leaf_dependencies, parents_first
from .schema import TEMP_CTE, WATCHED, CatalogState, confirm, probe_sql, record

# Above this size (live and dead rows) TRUNCATE beats DELETE: measured DELETE ~0.06 ms per 8 kB
# page vs TRUNCATE 0.5 ms (tuned) to 5 ms (stock disk) per table, and it drags in FK referrers.
TRUNCATE_ABOVE_BYTES = 64 * 8192
# Trigger modes (pg_trigger.tgenabled) that fire with / without session_replication_role=replica.
_FIRING = {True: frozenset("AR"), False: frozenset("OA")}
_ENABLE = {"O": "ENABLE TRIGGER", "A": "ENABLE ALWAYS TRIGGER", "R": "ENABLE REPLICA TRIGGER"}
# Detection, prepared once per connection: planning it costs more than running it (0.7 vs 0.2 ms
# at 50 tables) and asyncpg does not cache statements over 15 kB.
_PREPARED: weakref.WeakKeyDictionary[asyncpg.Connection, tuple[str, Any]] = (
    weakref.WeakKeyDictionary()
)

_RELATIONS = """
SELECT c.oid, c.relkind::text AS kind, format('%I.%I', n.nspname, c.relname) AS name,
       n.nspname AS schema, c.relname AS relname,
       ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid
             AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum)
         AS columns,
       ARRAY(SELECT ARRAY[t.tgname::text, t.tgenabled::text] FROM pg_trigger t
             WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgenabled <> 'D') AS triggers
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S') AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY name
"""
# (target, source): a TRUNCATE of target must include source (an FK referrer or a child).
_EDGES = """
SELECT confrelid AS target, conrelid AS source, true AS fk FROM pg_constraint WHERE contype = 'f'
UNION ALL SELECT inhparent, inhrelid, false FROM pg_inherits
"""


@dataclass(frozen=True)
class Table:
    """A table that holds rows (a regular table or a leaf partition) as it was at capture."""

    oid: int
    name: str  # schema-qualified, quoted where needed
    schema: str
    relname: str
    columns: tuple[str, ...]  # all but generated columns: what COPY moves
    triggers: tuple[tuple[str, str], ...]  # (name, tgenabled) of enabled user triggers
    rows: int
    data: bytes  # the seed rows as binary COPY


@dataclass(frozen=True)
class SequenceState:
    name: str
    last_value: int
    is_called: bool


@dataclass
class Snapshot:
    """What :func:`restore` needs; ``tables`` are ordered referenced-before-referencing."""

    tables: tuple[Table, ...]
    sequences: tuple[SequenceState, ...]
    truncate_with: Mapping[int, tuple[int, ...]]  # oid -> relations its TRUNCATE must include
    relation_names: Mapping[int, str]  # every table, partitioned ones included
    superuser: bool
    detect_sql: str  # one query: the index of every changed table or sequence, -1: the schema
    reference_xid: int  # rows with a younger xmin were written after capture or the last restore
    catalog: CatalogState  # the schema as captured; shared by copies made with replace()


@dataclass(frozen=True)
class RestoreStats:
    tables_emptied: tuple[str, ...] = ()
    truncated: tuple[str, ...] = ()  # those of tables_emptied that TRUNCATE emptied
    rows_restored: int = 0
    sequences_reset: tuple[str, ...] = ()
    schema_changed: bool = False  # DDL since the last restore: nothing was restored, re-clone


async def capture(conn: asyncpg.Connection) -> Snapshot:
    """Record a pristine clone (equal to its template): call before any test has written to it."""
    relations = await conn.fetch(_RELATIONS)
    kinds = {row["oid"]: row["kind"] for row in relations}
    edges = [e for e in await conn.fetch(_EDGES) if e["target"] in kinds and e["source"] in kinds]
    tables = await _tables(conn, [r for r in relations if r["kind"] == "r"], kinds, edges)
    names = [row["name"] for row in relations if row["kind"] == "S"]
    probes = [f"SELECT {i} AS i, last_value, is_called FROM {name}" for i, name in enumerate(names)]
    sequences = tuple(
        SequenceState(names[r["i"]], r["last_value"], r["is_called"])
        for r in await _union(conn, probes)
    )
    xid = await conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint - 1")
    superuser = await conn.fetchval("SELECT current_setting('is_superuser') = 'on'")
    truncate_with: dict[int, tuple[int, ...]] = {}
    for edge in edges:
        truncate_with[edge["target"]] = (*truncate_with.get(edge["target"], ()), edge["source"])
    names_by_oid = {row["oid"]: row["name"] for row in relations if row["kind"] != "S"}
    watched = [row["oid"] for row in await conn.fetch(WATCHED)]
    detect = _detect_sql(tables, sequences, watched)
    catalog = await record(conn)
    return Snapshot(tables, sequences, truncate_with, names_by_oid, superuser, detect, xid, catalog)


async def restore(
    conn: asyncpg.Connection, snapshot: Snapshot, *, truncate_above: int = TRUNCATE_ABOVE_BYTES
) -> RestoreStats:
    """Put the database back to ``snapshot``: one query finds changes, one transaction undoes.

    When the schema changed, nothing is restored: ``schema_changed`` says the database must be
    replaced. With superuser, ``conn`` stays in ``session_replication_role = replica``: each
    switch flushes the session's cached plans (re-planning detection cost 1.2 ms at 50 tables).
    """
    changed = await _detect(conn, snapshot)
    if changed is None:
        return RestoreStats(schema_changed=True)
    if not changed:
        return RestoreStats()
    plan = _plan(snapshot, changed, truncate_above)
    try:
        xid = await _apply(conn, plan, snapshot.superuser)
    except asyncpg.PostgresError as exc:
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        raise ResetError(_failure_message(exc, snapshot.superuser)) from exc
    if xid is not None:  # its own TRUNCATE and trigger switches are no schema change
        snapshot.catalog.reference_xid = max(snapshot.catalog.reference_xid, xid)
        if plan.refill:  # the rows it copied back are as old as the template's
            snapshot.reference_xid = xid
    emptied = tuple(t.name for t in plan.emptied)
    truncated = tuple(t.name for t in plan.emptied if t in plan.cut)
    rows = sum(t.rows for t in plan.refill)
    return RestoreStats(emptied, truncated, rows, tuple(s.name for s in plan.sequences))


async def _detect(conn: asyncpg.Connection, snapshot: Snapshot) -> list[tuple[int, int]] | None:
    """``(index, size)`` of what changed; None when the schema changed (then nothing else counts).

    A probe that fired, or a detection that failed (a captured table was dropped or renamed), is
    confirmed by comparing the schema's digest: a false alarm moves the catalog reference on.
    """
    catalog = snapshot.catalog
    args = (str(snapshot.reference_xid), str(catalog.reference_xid), catalog.counts)
    try:
        cached = _PREPARED.get(conn)
        if cached is None or cached[0] != snapshot.detect_sql:
            statement = await conn.prepare(snapshot.detect_sql)
            cached = _PREPARED[conn] = (snapshot.detect_sql, statement)
        rows = await cached[1].fetch(*args)
    except asyncpg.PostgresError as exc:
        if await confirm(conn, catalog):
            return None
        raise ResetError(f"could not detect what the test changed ({exc}); recreate it") from exc
    changed = [(row["i"], row["size"]) for row in rows]
    if any(i < 0 for i, _ in changed):
        if await confirm(conn, catalog):
            return None
        changed = [(i, size) for i, size in changed if i >= 0]
    return changed


@dataclass(frozen=True)
class _Plan:
    truncate: tuple[str, ...]  # relations for one TRUNCATE, partitioned parents included
    cut: frozenset[Table]  # the tables that TRUNCATE empties
    emptied: tuple[Table, ...]  # referenced before referencing
    sequences: tuple[SequenceState, ...]

    @property
    def refill(self) -> tuple[Table, ...]:
        return tuple(table for table in self.emptied if table.rows)


def _plan(snapshot: Snapshot, changed: Sequence[tuple[int, int]], truncate_above: int) -> _Plan:
    """DELETE what changed (FK checks off); TRUNCATE big tables, or all without superuser."""
    count = len(snapshot.tables)
    tables = {snapshot.tables[i]: size for i, size in changed if i < count}
    roots = [t.oid for t, size in tables.items() if size > truncate_above or not snapshot.superuser]
    cut_oids = closure(snapshot.truncate_with, roots)
    cut = frozenset(t for t in snapshot.tables if t.oid in cut_oids)
    emptied = tuple(t for t in snapshot.tables if t in cut or t in tables)
    names = tuple(sorted(snapshot.relation_names[oid] for oid in cut_oids))
    sequences = tuple(snapshot.sequences[i - count] for i, _ in changed if i >= count)
    return _Plan(names, cut, emptied, sequences)


async def _apply(conn: asyncpg.Connection, plan: _Plan, superuser: bool) -> int | None:
    """One script; with seed rows to put back, one COPY each and a closing script.

    Returns the transaction's xid when it copied rows back or wrote to the catalogs (TRUNCATE
    gives a new relfilenode, trigger switches update pg_trigger); None when it only DELETEd.
    """
    firing = [(t, n, m) for t in plan.emptied for n, m in t.triggers if m in _FIRING[superuser]]
    role = "SET session_replication_role = replica" if superuser else "SET CONSTRAINTS ALL DEFERRED"
    head = ["BEGIN", role]
    head += [f"ALTER TABLE {t.name} DISABLE TRIGGER {quote_ident(n)}" for t, n, _ in firing]
    head += [f"TRUNCATE {', '.join(plan.truncate)}"] if plan.truncate else []
    head += [f"DELETE FROM ONLY {t.name}" for t in plan.emptied if t not in plan.cut]
    head += [
        f"SELECT setval({quote_literal(s.name)}, {s.last_value}, {s.is_called})"
        for s in plan.sequences
    ]
    tail = [f"ALTER TABLE {t.name} {_ENABLE[m]} {quote_ident(n)}" for t, n, m in firing]
    tail.append("COMMIT")
    if not plan.refill and not plan.truncate and not firing:
        await conn.execute(";\n".join(head + tail))
        return None
    await conn.execute(";\n".join(head))
    for t in plan.refill:  # memoryview: asyncpg would take bytes for a path
        await conn.copy_to_table(
            t.relname,
            schema_name=t.schema,
            columns=t.columns,
            source=memoryview(t.data),
            format="binary",
        )
    xid: int = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
    await conn.execute(";\n".join(tail))
    return xid


def _failure_message(exc: asyncpg.PostgresError, superuser: bool) -> str:
    message = f"could not restore the template's state ({type(exc).__name__}: {exc}); recreate it"
    if not superuser and isinstance(exc, asyncpg.ForeignKeyViolationError):
        message += (
            ". Without superuser, foreign keys are checked as seed rows are copied back: seed rows"
            " in a cycle of non-deferrable foreign keys need a superuser or DEFERRABLE constraints"
        )
    return message


def _detect_sql(
    tables: Sequence[Table], sequences: Sequence[SequenceState], watched: Sequence[int]
) -> str:
    """``(i, size)`` of each changed table, ``(len(tables) + j, 0)`` of each changed sequence,
    ``(-1, 0)`` when the catalogs may have changed ($1: data, $2: catalog reference, $3: counts).
    """
    probes = []
    for i, t in enumerate(tables):
        select = f"SELECT {i} AS i, pg_relation_size({t.oid}::oid::regclass) AS size"
        probes.append(
            f"{select} WHERE (SELECT count(*) <> {t.rows} OR count(*) FILTER (WHERE "
            f"age(xmin) < (SELECT age FROM ref)) > 0 FROM ONLY {t.name})"
            if t.rows
            else f"{select} WHERE EXISTS (SELECT 1 FROM ONLY {t.name})"
        )
    probes += [
        f"SELECT {len(tables) + j}, 0 WHERE (SELECT last_value <> {s.last_value} "
        f"OR is_called <> {s.is_called} FROM {s.name})"
        for j, s in enumerate(sequences)
    ]
    probes.append(probe_sql(watched))
    head = (
        "WITH ref AS (SELECT age($1::text::xid8::xid) AS age, age($2::text::xid8::xid) AS cat),\n"
        f"{TEMP_CTE}\n"
    )
    return head + "\nUNION ALL ".join(probes)


async def _tables(
    conn: asyncpg.Connection,
    relations: Sequence[asyncpg.Record],
    kinds: Mapping[int, str],
    edges: Sequence[asyncpg.Record],
) -> tuple[Table, ...]:
    """Every table that holds rows, referenced before referencing, with its seed rows."""
    by_oid = {row["oid"]: row for row in relations}
    ordered = [by_oid[oid] for oid in parents_first(by_oid, leaf_dependencies(kinds, edges))]
    probes = [f"SELECT {i} AS i, count(*) FROM ONLY {r['name']}" for i, r in enumerate(ordered)]
    tables = []
    for row, count in zip(ordered, await _union(conn, probes), strict=True):
        triggers = tuple((name, mode) for name, mode in row["triggers"])
        fields = (row["oid"], row["name"], row["schema"], row["relname"], tuple(row["columns"]))
        data = await _copy_out(conn, row) if count["count"] else b""
        tables.append(Table(*fields, triggers, count["count"], data))
    return tuple(tables)


async def _union(conn: asyncpg.Connection, probes: Sequence[str]) -> list[asyncpg.Record]:
    """Many one-row probes in one round trip, in probe order (each selects its index as i)."""
    if not probes:
        return []
    return sorted(await conn.fetch("\nUNION ALL ".join(probes)), key=lambda row: row["i"])


async def _copy_out(conn: asyncpg.Connection, table: asyncpg.Record) -> bytes:
    """Binary COPY is exact for every type; generated columns are left out (COPY FROM refuses)."""
    chunks: list[bytes] = []

    async def collect(chunk: bytes) -> None:
        chunks.append(bytes(chunk))

    await conn.copy_from_table(
        table["relname"],
        schema_name=table["schema"],
        output=collect,
        columns=table["columns"],
        format="binary",
    )
    return b"".join(chunks)
