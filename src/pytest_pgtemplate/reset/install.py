"""Installing the change tracking into a freshly built template, and recording its layout.

Runs once per template, after the migrations ran and were verified and before the template is
marked finished, so a worker's setup is the clone plus one query: the seed rows are copied into
``pgtemplate.seed_<oid>`` tables (server-side, so every column type works, binary I/O or not),
and what the restore needs is stored as JSON (``layout``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import asyncpg

from ..errors import MigrationError
from . import sql
from .layout import Layout, MaterializedView, Probe, Table
from .layout import Sequence as SequenceState
from .order import closure, leaf_dependencies, parents_first
from .restore import TRUNCATE_ABOVE_BYTES, fires_on_restore, refill_statement
from .schema import WATCHED
from .schema import record as record_catalogs

_OUTSIDE = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgtemplate')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)
_RELATIONS = f"""
SELECT c.oid, c.relkind::text AS kind, format('%I.%I', n.nspname, c.relname) AS name,
       pg_has_role(c.relowner, 'USAGE') AS owned,
       c.relname <> 'alembic_version' AND NOT c.relispartition AND NOT EXISTS (
         SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
           AND d.deptype = 'e') AS user_table,
       ARRAY(SELECT quote_ident(a.attname) FROM pg_attribute a WHERE a.attrelid = c.oid
             AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum)
         AS columns,
       EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attidentity = 'a'
               AND NOT a.attisdropped) AS overriding,
       ARRAY(SELECT ARRAY[t.tgname::text, t.tgenabled::text] FROM pg_trigger t
             WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgenabled <> 'D'
               AND t.tgname <> '{sql.MARK_TRIGGER}' ORDER BY t.tgname) AS triggers,
       ARRAY(SELECT ARRAY[r.rulename::text, r.ev_enabled::text] FROM pg_rewrite r
             WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN' AND r.ev_enabled <> 'D'
             ORDER BY r.rulename) AS rules
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S', 'm') AND c.relpersistence <> 't' AND {_OUTSIDE}
ORDER BY name
"""
# (target, source): a TRUNCATE of target must include source (an FK referrer or a child).
_EDGES = """
SELECT confrelid AS target, conrelid AS source, true AS fk FROM pg_constraint WHERE contype = 'f'
UNION ALL SELECT inhparent, inhrelid, false FROM pg_inherits
"""
# Sequences a table's writes move: owned (serial, identity) or named in a column default.
_TABLE_SEQUENCES = """
SELECT d.refobjid AS rel, d.objid AS seq FROM pg_depend d
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype IN ('a', 'i')
UNION SELECT a.adrelid, d.refobjid FROM pg_attrdef a JOIN pg_depend d
  ON d.classid = 'pg_attrdef'::regclass AND d.objid = a.oid
  AND d.refclassid = 'pg_class'::regclass
  JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
"""
# Each table's primary key, where no column of it is generated (the seed copies leave those out).
_KEYS = """
SELECT i.indrelid AS rel, array_agg(quote_ident(a.attname) ORDER BY k.n) AS key
FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n), pg_attribute a
WHERE i.indisprimary AND a.attrelid = i.indrelid AND a.attnum = k.attnum
GROUP BY i.indrelid HAVING bool_and(a.attgenerated = '')
"""
_DEFERRED = """
SELECT format('%I.%I', n.nspname, c.conname) FROM pg_constraint c
JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.condeferred ORDER BY 1
"""


async def install(conn: asyncpg.Connection) -> Layout:
    """Install the tracking (in one transaction) and return the layout it stored."""
    superuser = bool(await conn.fetchval("SELECT current_setting('is_superuser') = 'on'"))
    if await conn.fetchval("SELECT to_regnamespace('pgtemplate') IS NOT NULL"):
        raise MigrationError(
            "the migrations created a schema named 'pgtemplate', which pytest-pgtemplate "
            "keeps for its change tracking; rename that schema"
        )
    async with conn.transaction():
        await conn.execute(sql.CREATE_SCHEMA)
        layout = await _layout(conn, superuser)
        await _track(conn, layout)
        if superuser:  # the event triggers last: they would mark the tracking's own DDL
            if await _wal_marks(conn, layout):
                layout = replace(layout, sequence_marks="wal")
            await conn.execute(sql.CREATE_EVENT_TRIGGERS)
        await _store(conn, layout)
    if not superuser:  # the probe's reference must cover the catalog rows written just now
        layout = replace(layout, probe=await _probe(conn))
        await conn.execute(
            "UPDATE pgtemplate.state SET value = $1 WHERE key = 'layout'", layout.to_json()
        )
    return layout


async def _layout(conn: asyncpg.Connection, superuser: bool) -> Layout:
    relations = [r for r in await conn.fetch(_RELATIONS) if superuser or r["owned"]]
    tables = [r for r in relations if r["kind"] in ("r", "p")]
    kinds = {r["oid"]: r["kind"] for r in tables}
    edges = [e for e in await conn.fetch(_EDGES) if e["target"] in kinds and e["source"] in kinds]
    seeded = await _seeded(conn, [r for r in tables if r["kind"] == "r"])
    return Layout(
        superuser=superuser,
        tables=_tables(tables, kinds, edges, seeded),
        sequences=await _sequences(conn, [r for r in relations if r["kind"] == "S"]),
        matviews=await _matviews(conn, [r for r in relations if r["kind"] == "m"]),
        deferred_constraints=tuple(r[0] for r in await conn.fetch(_DEFERRED)),
        truncate_all=tuple(r["name"] for r in tables if r["user_table"]),
        large_objects_acl=bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT FROM pg_largeobject_metadata WHERE lomacl IS NOT NULL)"
            )
        ),
    )


def _tables(
    rows: Sequence[asyncpg.Record],
    kinds: Mapping[int, str],
    edges: Sequence[asyncpg.Record],
    seeded: set[int],
) -> tuple[Table, ...]:
    by_oid = {row["oid"]: row for row in rows}
    children: dict[int, list[int]] = {}
    referrers: dict[int, list[int]] = {}
    for edge in edges:
        referrers.setdefault(edge["target"], []).append(edge["source"])
        if not edge["fk"]:
            children.setdefault(edge["target"], []).append(edge["source"])
    order = parents_first(by_oid, leaf_dependencies(kinds, edges))
    rank = {oid: i for i, oid in enumerate(order)}
    tables = []
    for oid in order:
        row = by_oid[oid]
        below = closure(lambda parent: children.get(parent, ()), [oid])
        tables.append(
            Table(
                oid=oid,
                name=row["name"],
                kind=row["kind"],
                leaves=tuple(sorted(o for o in below if kinds[o] == "r")),
                referrers=tuple(sorted(set(referrers.get(oid, ())))),
                rank=rank[oid],
                seed=f"pgtemplate.seed_{oid}" if oid in seeded else None,
                columns=", ".join(row["columns"]),
                overriding=row["overriding"],
                triggers=tuple((name, mode) for name, mode in row["triggers"]),
                rules=tuple((name, mode) for name, mode in row["rules"]),
            )
        )
    return tuple(tables)


async def _seeded(conn: asyncpg.Connection, tables: Sequence[asyncpg.Record]) -> set[int]:
    """Tables holding rows in the template, found in one round trip."""
    probes = [f"SELECT {r['oid']}::oid WHERE EXISTS (SELECT FROM ONLY {r['name']})" for r in tables]
    if not probes:
        return set()
    return {row[0] for row in await conn.fetch("\nUNION ALL ".join(probes))}


async def _sequences(
    conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
) -> tuple[SequenceState, ...]:
    if not rows:
        return ()
    probes = [
        f"SELECT {r['oid']}::oid AS oid, last_value, is_called FROM {r['name']}" for r in rows
    ]
    state = {r["oid"]: r for r in await conn.fetch("\nUNION ALL ".join(probes))}
    return tuple(
        SequenceState(
            r["oid"], r["name"], state[r["oid"]]["last_value"], state[r["oid"]]["is_called"]
        )
        for r in rows
    )


async def _matviews(
    conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
) -> tuple[MaterializedView, ...]:
    views = []
    for row in sorted(rows, key=lambda r: r["oid"]):  # dependencies were created first
        populated = bool(
            await conn.fetchval("SELECT relispopulated FROM pg_class WHERE oid = $1", row["oid"])
        )
        fresh = populated and await _fresh(conn, row["oid"], row["name"])
        views.append(MaterializedView(row["oid"], row["name"], populated, fresh))
    return tuple(views)


async def _fresh(conn: asyncpg.Connection, oid: int, name: str) -> bool:
    """Whether the view's rows are what its query gives now (no equality operator: unknown)."""
    query = (await conn.fetchval("SELECT pg_get_viewdef($1::oid)", oid)).rstrip().rstrip(";")
    compare = (
        f"SELECT NOT EXISTS (SELECT * FROM ((TABLE {name} EXCEPT ALL ({query}))"
        f" UNION ALL (({query}) EXCEPT ALL TABLE {name})) d)"
    )
    try:
        async with conn.transaction():  # a savepoint: a failed comparison leaves no trace
            return bool(await conn.fetchval(compare))
    except asyncpg.PostgresError:
        return False


async def _track(conn: asyncpg.Connection, layout: Layout) -> None:
    """A statement trigger on every table; seed rows copied aside; what check() reads."""
    statements = [sql.mark_trigger(t.name) for t in layout.tables]
    statements += [
        f"CREATE TABLE {t.seed} AS SELECT {t.columns} FROM ONLY {t.name}"
        for t in layout.tables
        if t.seed
    ]
    for start in range(0, len(statements), 200):
        await conn.execute(";\n".join(statements[start : start + 200]))
    links = await conn.fetch(_TABLE_SEQUENCES)
    keys = {row["rel"]: list(row["key"]) for row in await conn.fetch(_KEYS)}
    in_check = {t.oid: _in_check(t, layout, keys.get(t.oid)) for t in layout.tables}
    sizes = dict(
        await conn.fetch(
            "SELECT r, pg_relation_size(r) FROM unnest($1::oid[]) r",
            [t.oid for t in layout.tables if t.kind == "r"],
        )
    )
    # What a leaf held at build that a restore inside the check does not write again: all of it
    # but for a seeded leaf without a key, refilled whole.
    kept = {
        oid: 0 if layout.table(oid).seed and not keys.get(oid) else size
        for oid, size in sizes.items()
    }
    await conn.executemany(
        "INSERT INTO pgtemplate.tables VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            (
                t.oid,
                list(t.leaves),
                _sequences_of(t, layout, links),
                t.rank,
                *in_check[t.oid],
                sum(kept.get(leaf, 0) for leaf in t.leaves),
            )
            for t in layout.tables
        ],
    )
    if layout.superuser:
        await conn.execute(sql.create_restore_in_check(TRUNCATE_ABOVE_BYTES))
    await conn.execute(
        "INSERT INTO pgtemplate.sequences SELECT s, pg_sequence_last_value(s),"
        " pgtemplate.sequence_options(s), c.relpersistence = 'p', v"
        " FROM unnest($1::oid[], $2::bigint[]) AS x(s, v) JOIN pg_class c ON c.oid = s",
        [s.oid for s in layout.sequences],
        [s.last_value for s in layout.sequences],
    )
    await conn.execute(
        "INSERT INTO pgtemplate.large_objects"
        " SELECT oid, lomowner, lo_get(oid) FROM pg_largeobject_metadata"
    )


async def _wal_marks(conn: asyncpg.Connection, layout: Layout) -> bool:
    """Install ``pgtemplate.check`` where pg_walinspect can be had (PostgreSQL 15+, contrib
    installed); else the check compares every sequence after a test."""
    schema = await conn.fetchval(
        "SELECT quote_ident(extnamespace::regnamespace::text) FROM pg_extension"
        " WHERE extname = 'pg_walinspect'"
    )
    try:
        async with conn.transaction():  # a savepoint: without pg_walinspect, nothing is left
            if schema is None:
                await conn.execute("CREATE EXTENSION pg_walinspect SCHEMA pgtemplate")
                schema = "pgtemplate"
            unlogged = await conn.fetchval(
                "SELECT coalesce(array_agg(rel), '{}') FROM pgtemplate.sequences WHERE NOT logged"
            )
            await conn.execute(sql.create_wal_marks(schema, unlogged))
    except asyncpg.PostgresError:
        return False
    # setval() leaves a sequence's log_cnt at 0, so that the next nextval() writes WAL; a
    # clone's pages are the template's (a restore's setval() does the same).
    await conn.execute(
        "SELECT setval(s, v, c) FROM unnest($1::oid[], $2::bigint[], $3::bool[]) AS x(s, v, c)",
        [s.oid for s in layout.sequences],
        [s.last_value for s in layout.sequences],
        [s.is_called for s in layout.sequences],
    )
    return True


def _in_check(
    table: Table, layout: Layout, key: Sequence[str] | None
) -> tuple[str | None, str | None]:
    """The statements the check after a test restores a leaf with: as superuser, for a table
    none of whose triggers or rules fire under replica (the client's restore switches those
    off around it); (None, None) otherwise. A seeded leaf with a primary key: only what the
    test wrote goes, only the seed rows it misses come back (``sql.diff_empty``)."""
    if not layout.superuser or table.kind != "r" or fires_on_restore(table, superuser=True):
        return None, None
    if table.seed is None:
        return f"DELETE FROM ONLY {table.name}", None
    if key:
        refill = sql.diff_refill(
            table.name, table.columns, table.seed, key, overriding=table.overriding
        )
        return sql.diff_empty(table.name), refill
    return f"DELETE FROM ONLY {table.name}", refill_statement(table)


def _sequences_of(table: Table, layout: Layout, links: Sequence[asyncpg.Record]) -> list[int]:
    """A table's own sequences and those of its ancestors and descendants (a partition's
    identity comes from its parent; a write through a parent reaches the children's)."""
    family = set(table.leaves) | {table.oid}
    family |= {t.oid for t in layout.tables if table.oid in t.leaves}
    known = {s.oid for s in layout.sequences}
    return sorted({link["seq"] for link in links if link["rel"] in family} & known)


async def _store(conn: asyncpg.Connection, layout: Layout) -> None:
    await conn.executemany(
        "INSERT INTO pgtemplate.state VALUES ($1, $2)",
        [
            ("layout", layout.to_json()),
            ("settings", ""),
            ("event_triggers", await conn.fetchval("SELECT pgtemplate.event_triggers()")),
            ("clustered", await conn.fetchval(sql.CLUSTERED)),
            ("database", ""),
        ],
    )
    await conn.execute(
        "INSERT INTO pgtemplate.state SELECT k, pg_current_xact_id()::text"
        f" FROM unnest(ARRAY['ref', 'databases_seen', '{sql.ROWS_SINCE}']) k"
        f" UNION ALL SELECT '{sql.ROWS_BY}', '0'"
    )


async def _probe(conn: asyncpg.Connection) -> Probe:
    """The catalogs as they are now, once the tracking is in (no event triggers: no superuser)."""
    state = await record_catalogs(conn)
    watched = tuple(row[0] for row in await conn.fetch(WATCHED))
    matviews = await conn.fetch(
        "SELECT oid, relfilenode::bigint FROM pg_class WHERE relkind = 'm' ORDER BY oid"
    )
    return Probe(
        state.digest,
        tuple(state.counts),
        state.reference_xid,
        watched,
        tuple((row[0], row[1]) for row in matviews),
    )
