"""Undoing what :func:`check` found, in one transaction, from what the template recorded.

Marked tables are emptied (DELETE; TRUNCATE above ``TRUNCATE_ABOVE_BYTES``, which must take the
tables referencing them along) and their seed rows copied back from ``pgtemplate.seed_<oid>``,
referenced tables first; moved sequences are set back; refreshed materialized views are
refreshed again once their tables are back; large objects and database settings are rewritten.
As superuser the transaction runs with ``session_replication_role = replica``, so foreign keys
and ordinary triggers stay quiet; without it, every table a change reaches is TRUNCATEd together
and foreign keys are checked as the rows go back (deferrable ones at the commit).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from ..errors import ResetError
from ..naming import quote_ident, quote_literal
from . import sql
from .check import Changes, Watch
from .layout import Layout, Table
from .order import closure

# Above this size (live and dead rows) TRUNCATE beats DELETE: DELETE's cost grows with the
# pages, TRUNCATE's is fixed per table (benchmarks/reset_overhead.py measures both).
TRUNCATE_ABOVE_BYTES = 64 * 8192
# Trigger modes (pg_trigger.tgenabled) that fire with / without session_replication_role=replica.
_FIRING = {True: frozenset("AR"), False: frozenset("OA")}
_ENABLE = {"O": "ENABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}
_LARGE_OBJECTS = """DO $$ DECLARE r record; BEGIN
  PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
  FOR r IN SELECT * FROM pgtemplate.large_objects LOOP
    PERFORM lo_from_bytea(r.loid, r.data);
    IF r.owner <> (SELECT oid FROM pg_roles WHERE rolname = current_user) THEN
      EXECUTE format('ALTER LARGE OBJECT %s OWNER TO %I', r.loid, r.owner::regrole);
    END IF;
  END LOOP; END $$"""
_RESET_SETTINGS = """DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT s.setrole FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
           WHERE d.datname = current_database() LOOP
    IF r.setrole = 0 THEN
      EXECUTE format('ALTER DATABASE %I RESET ALL', current_database());
    ELSE
      EXECUTE format('ALTER ROLE %I IN DATABASE %I RESET ALL', r.setrole::regrole,
                     current_database());
    END IF;
  END LOOP; END $$"""


@dataclass(frozen=True)
class RestoreStats:
    tables_emptied: tuple[str, ...] = ()
    truncated: tuple[str, ...] = ()  # those of tables_emptied that TRUNCATE emptied
    tables_refilled: tuple[str, ...] = ()
    sequences_reset: tuple[str, ...] = ()
    refreshed: tuple[str, ...] = ()
    large_objects: bool = False
    settings: bool = False
    in_check: bool = field(default=False, compare=False)
    """How, not what: the check after the test restored it (``sql.create_restore_in_check``)."""


@dataclass(frozen=True)
class Plan:
    truncate: tuple[str, ...]  # relations for one TRUNCATE, partitioned parents included
    cut: frozenset[int]  # the tables that TRUNCATE empties
    emptied: tuple[Table, ...]  # referenced before referencing
    marks: frozenset[int]  # every table whose mark the restore writes or clears

    @property
    def refill(self) -> tuple[Table, ...]:
        return tuple(table for table in self.emptied if table.seed)


def plan(layout: Layout, changes: Changes, truncate_above: int = TRUNCATE_ABOVE_BYTES) -> Plan:
    """DELETE what changed (FK checks off); TRUNCATE big tables, or all without superuser."""
    marked = dict(changes.tables)
    changed = {leaf for oid in marked for leaf in layout.table(oid).leaves}
    roots = [oid for oid, size in marked.items() if size > truncate_above or not layout.superuser]
    cut_all = closure(lambda oid: layout.table(oid).referrers, roots)
    cut = frozenset(oid for oid in cut_all if layout.table(oid).kind == "r")
    emptied = tuple(
        layout.table(oid)
        for oid in sorted(changed | cut, key=layout.position)
        if layout.table(oid).kind == "r"
    )
    names = tuple(sorted(layout.table(oid).name for oid in cut_all))
    return Plan(names, cut, emptied, frozenset(marked) | cut_all | changed)


def fires_on_restore(table: Table, *, superuser: bool) -> list[tuple[str, str, str]]:
    """(TRIGGER or RULE, name, mode) of the table's triggers and rules that would fire on the
    restore's own writes."""
    return [
        (kind, name, mode)
        for kind, each in (("TRIGGER", table.triggers), ("RULE", table.rules))
        for name, mode in each
        if mode in _FIRING[superuser]
    ]


def script(
    layout: Layout, changes: Changes, the_plan: Plan, settings: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The restore's statements: (up to the last write, the rest up to COMMIT)."""
    superuser = layout.superuser
    firing = [
        (t, kind, name, mode)
        for t in the_plan.emptied
        for kind, name, mode in fires_on_restore(t, superuser=superuser)
    ]
    role = (  # the resetter's session is replica already: no change, the plans stay
        "SET LOCAL session_replication_role = replica"
        if superuser
        else "SET CONSTRAINTS ALL DEFERRED"
    )
    head = ["BEGIN", f"SET LOCAL {sql.RESTORING} = 'on'", role]
    head += [f"ALTER TABLE {t.name} DISABLE {k} {quote_ident(n)}" for t, k, n, _ in firing]
    head += [f"TRUNCATE {', '.join(the_plan.truncate)}"] if the_plan.truncate else []
    head += [f"DELETE FROM ONLY {t.name}" for t in the_plan.emptied if t.oid not in the_plan.cut]
    head += [refill_statement(t) for t in the_plan.refill]
    head += [
        f"SELECT setval({s.oid}::regclass, {s.last_value}, {s.is_called})"
        for s in map(layout.sequence, changes.sequences)
        if s is not None
    ]
    head += [_refresh(layout, oid) for oid in changes.refreshed]
    head += [_LARGE_OBJECTS] if changes.large_objects else []
    head += [_RESET_SETTINGS, *settings] if changes.settings else []
    tail = [f"ALTER TABLE {t.name} {_ENABLE[m]} {k} {quote_ident(n)}" for t, k, n, m in firing]
    oids = "{" + ",".join(str(oid) for oid in sorted(the_plan.marks)) + "}"
    tail += [
        f"DELETE FROM pgtemplate.dirty WHERE rel = ANY ('{oids}'::oid[])",
        "DELETE FROM pgtemplate.ddl WHERE kind IN ('refresh', 'sequence')",
        "UPDATE pgtemplate.state SET value = pg_current_xact_id()::text WHERE key = 'ref'",
        "COMMIT",
    ]
    return head, tail


async def restore(
    conn: asyncpg.Connection,
    layout: Layout,
    changes: Changes,
    watch: Watch,
    *,
    settings: Sequence[str] = (),
    truncate_above: int = TRUNCATE_ABOVE_BYTES,
) -> RestoreStats:
    """Undo ``changes``; raise :class:`ResetError` (the database is then to be replaced)."""
    stale = [
        m.name
        for m in layout.matviews
        if m.oid in changes.refreshed and m.populated and not m.fresh
    ]
    if stale or (changes.large_objects and layout.large_objects_acl):
        what = f"materialized view {stale[0]}" if stale else "large objects with an ACL"
        raise ResetError(f"a REFRESH of a {what} cannot be undone exactly; recreate it")
    if changes.restored:  # the check did it, in its own statement: no TRUNCATE, the leaves only
        return _stats(layout, changes, plan(layout, changes, truncate_above=sys.maxsize))
    the_plan = plan(layout, changes, truncate_above)
    head, tail = script(layout, changes, the_plan, settings)
    try:
        if watch.catalog is None:
            await conn.execute(";\n".join(head + tail))
        else:  # without event triggers: the restore's own catalog writes move the reference
            await conn.execute(";\n".join(head))
            xid = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
            await conn.execute(";\n".join(tail))
            watch.catalog.reference_xid = max(watch.catalog.reference_xid, xid)
            await _note_view_files(conn, watch, changes.refreshed)
    except asyncpg.PostgresError as exc:
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        raise ResetError(_failure_message(exc, layout.superuser)) from exc
    return _stats(layout, changes, the_plan)


def refill_statement(table: Table) -> str:
    overriding = " OVERRIDING SYSTEM VALUE" if table.overriding else ""
    return (
        f"INSERT INTO {table.name} ({table.columns}){overriding}"
        f" SELECT {table.columns} FROM {table.seed}"
    )


def _refresh(layout: Layout, oid: int) -> str:
    view = next(m for m in layout.matviews if m.oid == oid)
    return f"REFRESH MATERIALIZED VIEW {view.name}{'' if view.populated else ' WITH NO DATA'}"


async def _note_view_files(
    conn: asyncpg.Connection, watch: Watch, refreshed: Sequence[int]
) -> None:
    if refreshed:
        rows = await conn.fetch(
            "SELECT oid, relfilenode::bigint FROM pg_class WHERE oid = ANY ($1::oid[])",
            list(refreshed),
        )
        watch.matview_files.update((row[0], row[1]) for row in rows)


def _stats(layout: Layout, changes: Changes, the_plan: Plan) -> RestoreStats:
    sequences = [s for s in map(layout.sequence, changes.sequences) if s is not None]
    return RestoreStats(
        tables_emptied=tuple(t.name for t in the_plan.emptied),
        truncated=tuple(t.name for t in the_plan.emptied if t.oid in the_plan.cut),
        tables_refilled=tuple(t.name for t in the_plan.refill),
        sequences_reset=tuple(sorted(s.name for s in sequences)),
        refreshed=tuple(m.name for m in layout.matviews if m.oid in changes.refreshed),
        large_objects=changes.large_objects,
        settings=changes.settings,
        in_check=changes.restored,
    )


def _failure_message(exc: asyncpg.PostgresError, superuser: bool) -> str:
    message = f"could not restore the template's state ({type(exc).__name__}: {exc}); recreate it"
    if not superuser and isinstance(exc, asyncpg.ForeignKeyViolationError):
        message += (
            ". Without superuser, foreign keys are checked as seed rows are copied back: seed rows"
            " in a cycle of non-deferrable foreign keys need a superuser or DEFERRABLE constraints"
        )
    return message


def settings_statements(database: str, rows: Sequence[asyncpg.Record]) -> list[str]:
    """``ALTER DATABASE/ROLE ... SET`` bringing back ``rows`` (pg_db_role_setting as recorded)."""
    statements = []
    for row in rows:
        target = f"DATABASE {quote_ident(database)}"
        if row["role"] is not None:
            target = f"ROLE {quote_ident(row['role'])} IN DATABASE {quote_ident(database)}"
        for setting in row["setconfig"]:
            key, _, value = setting.partition("=")
            statements.append(f"ALTER {target} SET {key} = {_setting_value(key, value)}")
    return statements


_LIST_SETTINGS = frozenset(
    {"search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries"}
)


def _setting_value(key: str, value: str) -> str:
    """List settings are stored already quoted element by element ("My Schema", public)."""
    return value if key.lower() in _LIST_SETTINGS else quote_literal(value)
