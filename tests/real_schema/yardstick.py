"""The yardstick of the pairs: a worker database's whole state, read on a connection of its own.

Written independently of the plugin's change tracking (a digest shared with the code under test
would miss what that code misses). Each facet maps a name to a short digest or value:

- ``rows``: every table holding rows (partitions, children, unlogged, extension members, alembic's
  version table), the count and a multiset hash of its rows in text form;
- ``sequences``: ``last_value is_called`` of every sequence, read without moving it;
- ``matviews``: contents, or ``not populated``;
- ``catalogs``: every catalog row that defines the schema (the whole row, minus the columns that
  change without a schema change: file numbers, statistics, lazily cleared flags), temporary
  objects and TOAST tables left out: comments, ACLs, default privileges, statistics objects,
  text search, policies, trigger modes, extension versions and members, sequence options...;
- ``large_objects``: oid, owner, ACL and md5 of the data of each;
- ``database``: the database's own row (ACL, connection limit...) and its ``ALTER DATABASE`` /
  ``ALTER ROLE ... IN DATABASE`` settings;
- ``connections``: other backends inside a transaction, prepared transactions and advisory locks
  in this database: state that outlives the test through a connection.

``session`` is apart: what one connection carries (SET, roles, temp tables, LISTEN, cursors,
prepared statements, advisory locks); it is read on the pooled connection under test.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

RUN = os.environ.get("REAL_SCHEMA_RUN", "restore")
"""``restore``, ``rollback``, ``recreate``, or ``broken``: the reset between a pair's tests is
skipped (see conftest.py); the plugin's default strategy resets between pairs."""
STRATEGY = "restore" if RUN == "broken" else RUN
MISMATCH = "STATE DIFFERS from the template's"
"""Every failing comparison says this: the outer test tells such a failure from any other."""

Facets = dict[str, dict[str, str]]

_USER = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgtemplate')"
    " AND n.nspname !~ '^pg_(toast|temp_)' AND c.relpersistence <> 't'"
)
_RELATIONS = f"""
SELECT c.relkind::text AS kind, c.relispopulated AS populated,
       format('%I.%I', n.nspname, c.relname) AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'S', 'm') AND {_USER} ORDER BY 3
"""
_DIGEST = "count(*) || ' ' || coalesce(sum(hashtextextended(t::text, 0)), 0)"
"""A multiset hash of the rows in text form: any physical order, duplicates counted, no sort."""

_TEMP = (
    "(SELECT coalesce(array_agg(oid), '{}') FROM pg_namespace"
    " WHERE nspname ~ '^pg_(toast_)?temp_')::oid[]"
)
_INTERNAL_REL = (  # temporary relations, and TOAST tables (a REFRESH gives a matview a new one)
    "(SELECT coalesce(array_agg(c.oid), '{}') FROM pg_class c JOIN pg_namespace n"
    " ON n.oid = c.relnamespace WHERE n.nspname ~ '^pg_(toast|temp_)')::oid[]"
)
_USER_OBJECT = "oid >= 16384"
# catalog: (its rows that describe this database's schema, columns that move without DDL)
CATALOGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pg_namespace": (f"oid <> ALL ({_TEMP})", ()),
    "pg_class": (
        f"{_USER_OBJECT} AND oid <> ALL ({_INTERNAL_REL})",
        (
            "relfilenode",
            "reltoastrelid",
            "relpages",
            "reltuples",
            "relallvisible",
            "relfrozenxid",
            "relminmxid",
            "relhasindex",
            "relhasrules",
            "relhastriggers",
            "relhassubclass",
        ),
    ),
    "pg_attribute": (f"attrelid >= 16384 AND attrelid <> ALL ({_INTERNAL_REL})", ()),
    "pg_attrdef": (f"adrelid <> ALL ({_INTERNAL_REL})", ()),
    "pg_constraint": (f"connamespace <> ALL ({_TEMP})", ()),
    "pg_index": (f"indexrelid >= 16384 AND indrelid <> ALL ({_INTERNAL_REL})", ()),
    "pg_trigger": (f"tgrelid <> ALL ({_INTERNAL_REL})", ()),
    "pg_rewrite": (f"{_USER_OBJECT} AND ev_class <> ALL ({_INTERNAL_REL})", ()),
    "pg_policy": ("true", ()),
    "pg_inherits": ("true", ()),
    "pg_type": (f"{_USER_OBJECT} AND typnamespace <> ALL ({_TEMP})", ()),
    "pg_enum": ("true", ()),
    "pg_proc": (f"{_USER_OBJECT} AND pronamespace <> ALL ({_TEMP})", ()),
    "pg_aggregate": ("aggfnoid >= 16384", ()),
    "pg_operator": (_USER_OBJECT, ()),
    "pg_opclass": (_USER_OBJECT, ()),
    "pg_opfamily": (_USER_OBJECT, ()),
    "pg_amop": (_USER_OBJECT, ()),
    "pg_amproc": (_USER_OBJECT, ()),
    "pg_cast": (_USER_OBJECT, ()),
    "pg_collation": (_USER_OBJECT, ()),
    "pg_conversion": (_USER_OBJECT, ()),
    "pg_language": (_USER_OBJECT, ()),
    "pg_sequence": (f"seqrelid <> ALL ({_INTERNAL_REL})", ()),
    "pg_description": ("objoid >= 16384", ()),
    "pg_default_acl": ("true", ()),
    "pg_init_privs": ("objoid >= 16384", ()),
    "pg_statistic_ext": ("true", ()),
    "pg_ts_config": (_USER_OBJECT, ()),
    "pg_ts_config_map": ("mapcfg >= 16384", ()),
    "pg_ts_dict": (_USER_OBJECT, ()),
    "pg_extension": ("true", ()),
    "pg_event_trigger": ("true", ()),
    "pg_publication": ("true", ()),
    "pg_foreign_data_wrapper": ("true", ()),
    "pg_foreign_server": ("true", ()),
    "pg_foreign_table": ("true", ()),
    "pg_transform": ("true", ()),
    "pg_seclabel": ("true", ()),
    "pg_depend": (  # extension members, and the column that owns a sequence
        "(deptype IN ('e', 'x') OR classid = 'pg_class'::regclass AND objid IN"
        f" (SELECT seqrelid FROM pg_sequence)) AND objid <> ALL ({_INTERNAL_REL})",
        (),
    ),
}


def _catalog(name: str, where: str, moving: tuple[str, ...]) -> str:
    """A row's text form (jsonb minus the moving columns where there are some: 3x slower)."""
    row = "to_jsonb(x)" + "".join(f" - '{column}'" for column in moving) if moving else "x"
    return (
        f"SELECT '{name}', count(*) || ' ' || coalesce(sum(hashtextextended(r, 0)), 0)"
        f" FROM (SELECT ({row})::text AS r FROM {name} x WHERE {where}) s"
    )


_CATALOG_QUERY = "\nUNION ALL ".join(
    _catalog(name, where, moving) for name, (where, moving) in CATALOGS.items()
)
_SINGLE_VALUES = """
SELECT 'large_objects', 'all', coalesce(jsonb_agg(jsonb_build_array(m.oid, m.lomowner::regrole,
         m.lomacl, md5(lo_get(m.oid))) ORDER BY m.oid), '[]')::text
  FROM pg_largeobject_metadata m
UNION ALL SELECT 'database', 'row', (to_jsonb(d) - 'oid' - 'datfrozenxid' - 'datminmxid')::text
  FROM pg_database d WHERE d.datname = current_database()
UNION ALL SELECT 'database', 'settings', coalesce(jsonb_agg(jsonb_build_array(
    CASE s.setrole WHEN 0 THEN '' ELSE s.setrole::regrole::text END,
    ARRAY(SELECT unnest(s.setconfig) ORDER BY 1)) ORDER BY s.setrole), '[]')::text
  FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
  WHERE d.datname = current_database()
UNION ALL SELECT 'connections', 'inside a transaction', count(*)::text FROM pg_stat_activity
  WHERE datname = current_database() AND pid <> pg_backend_pid()
    AND backend_type = 'client backend' AND coalesce(state, 'idle') <> 'idle'
UNION ALL SELECT 'connections', 'prepared transactions', count(*)::text FROM pg_prepared_xacts
  WHERE database = current_database()
UNION ALL SELECT 'connections', 'advisory locks', count(*)::text FROM pg_locks
  WHERE locktype = 'advisory'
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
SESSION = """
SELECT jsonb_build_object(
  'current_user', current_user, 'session_user', session_user,
  'search_path', current_setting('search_path'),
  'app.tenant', nullif(current_setting('app.tenant', true), ''),
  'settings changed by SET', (SELECT coalesce(jsonb_object_agg(name, setting), '{}')
                              FROM pg_settings WHERE source = 'session'),
  'temporary relations', (SELECT count(*) FROM pg_class
                          WHERE relnamespace = pg_my_temp_schema()),
  'listening', (SELECT count(*) FROM pg_listening_channels()),
  'advisory locks', (SELECT count(*) FROM pg_locks
                     WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
  'cursors', (SELECT count(*) FROM pg_cursors WHERE name <> ''),  -- '': the query's portal
  'prepared statements', (SELECT count(*) FROM pg_prepared_statements WHERE from_sql)
)::text
"""
"""What one connection carries from a test into the next; run it on that connection."""


def _probe(kind: str, name: str, populated: bool) -> str:
    label = "'" + name.replace("'", "''") + "'"
    if kind == "r":
        return f"SELECT 'rows', {label}, {_DIGEST} FROM ONLY {name} t"
    if kind == "S":
        return f"SELECT 'sequences', {label}, last_value || ' ' || is_called FROM {name}"
    if not populated:
        return f"SELECT 'matviews', {label}, 'not populated'"
    return f"SELECT 'matviews', {label}, {_DIGEST} FROM {name} t"


async def snapshot(url: str) -> Facets:
    """The database's state now, on a new connection (superuser: row-level security is off)."""
    conn = await asyncpg.connect(url)
    try:
        relations = await conn.fetch(_RELATIONS)
        data = " UNION ALL ".join(_probe(r["kind"], r["name"], r["populated"]) for r in relations)
        rows = await conn.fetch(f"{data}\nUNION ALL {_SINGLE_VALUES}")
        catalogs = await conn.fetch(_CATALOG_QUERY)
    finally:
        await conn.close()
    facets: Facets = {"catalogs": dict(catalogs)}
    for facet, key, value in rows:
        facets.setdefault(facet, {})[key] = value
    return facets


def differences(expected: Facets, actual: Facets) -> list[str]:
    found = []
    for facet in sorted(set(expected) | set(actual)):
        before, now = expected.get(facet, {}), actual.get(facet, {})
        for key in sorted(set(before) | set(now)):
            if before.get(key) != now.get(key):
                found.append(f"{facet} {key}: {before.get(key)} -> {now.get(key)}")
    return found


async def assert_template_state(url: str, pristine: Facets) -> None:
    """Compare every facet with the template's; the message names each difference."""
    found = differences(pristine, await snapshot(url))
    assert not found, f"{MISMATCH}: " + "; ".join(found)


def assert_same_session(expected: dict[str, Any], now_text: str) -> None:
    now = json.loads(now_text)
    found = [
        f"{k}: {expected.get(k)!r} -> {now.get(k)!r}" for k in expected if expected[k] != now[k]
    ]
    assert not found, f"{MISMATCH} (session of a pooled connection): " + "; ".join(found)


async def session_state(url: str) -> dict[str, Any]:
    """What a new connection carries: the baseline of every pooled one."""
    conn = await asyncpg.connect(url)
    try:
        state: dict[str, Any] = json.loads(await conn.fetchval(SESSION))
    finally:
        await conn.close()
    return state


LEFT: dict[str, int] = {}
"""Pair -> backend pid of the pooled connection its a test left its session state on."""


@asynccontextmanager
async def left_behind(engine: AsyncEngine, pair: str) -> AsyncIterator[AsyncConnection]:
    """The pooled connection the pair's a test used, checked out again (the pool's other
    connections go back). Under ``recreate`` the database and its pool were replaced: a new
    connection. Under the others the pool must hand it out, or the pair would prove nothing."""
    pool: Any = engine.sync_engine.pool
    held = [await engine.connect() for _ in range(pool.checkedin())]
    found = None
    for conn in held:
        if await conn.scalar(text("SELECT pg_backend_pid()")) == LEFT[pair]:
            found = conn
        else:
            await conn.close()
    _reused(found)
    conn = found or await engine.connect()
    try:
        yield conn
    finally:
        await conn.close()


@contextmanager
def left_behind_sync(engine: Engine, pair: str) -> Iterator[Connection]:
    pool: Any = engine.pool
    held = [engine.connect() for _ in range(pool.checkedin())]
    found = None
    for conn in held:
        if conn.scalar(text("SELECT pg_backend_pid()")) == LEFT[pair]:
            found = conn
        else:
            conn.close()
    _reused(found)
    with found or engine.connect() as conn:
        yield conn


def _reused(found: object) -> None:
    if found is None and STRATEGY != "recreate":
        pytest.fail("the pool did not hand out the a test's connection again: the pair is void")
