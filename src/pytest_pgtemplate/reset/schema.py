"""Schema-change detection without event triggers: a cheap catalog probe, confirmed by a digest.

Only a superuser may create event triggers; for any other role this stands in for them. A test's
DDL leaves catalog rows behind: ``CREATE`` inserts rows, ``ALTER``/``RENAME``/``COMMENT`` write
new row versions (a younger ``xmin``), ``DROP`` deletes rows (a lower count). The probe looks for
exactly that in the catalogs that define a schema: rows younger than
``CatalogState.reference_xid``, or a count that differs from ``CatalogState.counts``. Rows of
temporary objects (``pg_temp_N``/``pg_toast_temp_N``) are left out where that is cheap: a test's
TEMP table is not a schema change. It reads every catalog row of the schema, so it costs what
the schema's size does: the price of running without superuser.

The probe also fires on harmless writes: a test's ``TRUNCATE``, ``VACUUM FULL`` or ``REINDEX``
(new ``relfilenode``), a transaction that did DDL and rolled back. So when it fires,
:func:`confirm` compares a digest of the schema-defining columns (no ``relfilenode``, no
statistics) with the one recorded at install; on a false alarm it moves the reference forward,
so the same rows are not checked again. ``pg_attribute`` is the biggest catalog: only the user
columns of the recorded relations are probed (new relations show in ``pg_class``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

_CAT = "(SELECT cat FROM ref)"  # age of the catalog reference xid, an InitPlan (once per query)
_TEMP = "(SELECT oids FROM tmp)::oid[]"
_IS_TEMP_NS = r"nspname ~ '^pg_(toast_)?temp_\d+$'"
TEMP_CTE = (
    "tmp AS (SELECT coalesce(array_agg(oid), '{}') AS oids FROM pg_namespace"
    f" WHERE {_IS_TEMP_NS})"
)

# (catalog, rows counted, the ones that are not temporary, probe for younger rows too). Built-in
# objects (oid < 16384) are left out where an index on oid makes that cheaper than a scan.
_COUNTED = (
    ("pg_class", "true", "relpersistence <> 't'", True),
    ("pg_namespace", "true", f"NOT ({_IS_TEMP_NS})", True),
    ("pg_type", "oid >= 16384", f"typnamespace <> ALL({_TEMP})", True),
    ("pg_proc", "oid >= 16384", f"pronamespace <> ALL({_TEMP})", True),
    ("pg_constraint", "true", f"connamespace <> ALL({_TEMP})", True),
    # DROP TRIGGER only deletes; a temp table's trigger is a false alarm, then counted in.
    ("pg_trigger", "NOT tgisinternal", "true", False),
    ("pg_description", "objoid >= 16384", "true", True),  # COMMENT ON
    ("pg_default_acl", "true", "true", True),  # ALTER DEFAULT PRIVILEGES
    ("pg_statistic_ext", "true", "true", True),  # CREATE STATISTICS
    ("pg_ts_config", "oid >= 16384", "true", True),  # CREATE TEXT SEARCH CONFIGURATION
    ("pg_depend", "deptype = 'e'", "true", True),  # ALTER EXTENSION ... ADD / DROP
)
# Catalogs probed for younger rows only (their deletions change a counted catalog too): the
# relation a row belongs to is looked up for young rows only, to leave temp tables out.
_YOUNG = (
    ("pg_attrdef", "adrelid"),
    ("pg_trigger", "tgrelid"),
    ("pg_rewrite", "ev_class"),
    ("pg_policy", "polrelid"),
)


WATCHED = """
SELECT oid FROM pg_class WHERE oid >= 16384 AND relkind IN ('r', 'p', 'v', 'm', 'c', 'f')
  AND relpersistence <> 't' ORDER BY 1
"""


@dataclass
class CatalogState:
    """The schema as captured, and how far the catalogs are known to match it."""

    digest: str
    counts: list[int]  # of the _COUNTED catalogs, in order
    reference_xid: int  # catalog rows with a younger xmin were written after it


def _count_columns() -> str:
    return ", ".join(
        f"(SELECT count(*) FROM {cat} WHERE {rows} AND {keep})" for cat, rows, keep, _ in _COUNTED
    )


def probe_sql(columns_of: Sequence[int]) -> str:
    """One UNION ALL branch ``(-1, 0)`` when the catalogs may have changed.

    Needs the CTEs ``ref`` (``cat``: age of ``$2``) and ``tmp``, and ``$3``: the expected counts.
    ``columns_of``: relations whose user columns are probed (tables, views, composite types).
    """
    scans, young = [], []
    for i, (cat, rows, keep, probed) in enumerate(_COUNTED):
        flag = f"coalesce(bool_or({keep} AND age(xmin) < {_CAT}), false)" if probed else "false"
        scans.append(
            f"(SELECT count(*) FILTER (WHERE {keep}) AS n, {flag} AS young FROM {cat}"
            f" WHERE {rows}) c{i}"
        )
        young.append(f"c{i}.young")
    counts = ", ".join(f"c{i}.n" for i in range(len(_COUNTED)))
    oids = "{" + ",".join(str(oid) for oid in columns_of) + "}"
    young.append(  # one index descent per relation (OFFSET 0 keeps the planner from a scan of
        # all of pg_attribute, which measured 10x more)
        f"EXISTS (SELECT FROM unnest('{oids}'::oid[]) r, LATERAL (SELECT FROM pg_attribute x "
        f"WHERE x.attrelid = r AND x.attnum > 0 AND age(x.xmin) < {_CAT} OFFSET 0) y)"
    )
    young += [
        f"EXISTS (SELECT FROM {cat} x WHERE age(x.xmin) < {_CAT} AND (SELECT relpersistence "
        f"FROM pg_class WHERE oid = x.{rel}) IS DISTINCT FROM 't')"
        for cat, rel in _YOUNG
    ]
    young += [
        f"EXISTS (SELECT FROM {cat} WHERE age(xmin) < {_CAT})"
        for cat in ("pg_enum", "pg_ts_config_map")
    ]
    return (
        f"SELECT -1 AS i, 0::bigint AS size FROM {', '.join(scans)}\n"
        f"WHERE ARRAY[{counts}] <> $3::bigint[] OR {' OR '.join(young)}"
    )


async def record(conn: asyncpg.Connection) -> CatalogState:
    """The digest and counts now, and the xid they hold for (newer writes are not in them)."""
    row = await conn.fetchrow(_RECORD)
    return CatalogState(row["digest"], list(row["counts"]), row["xid"])


async def confirm(conn: asyncpg.Connection, state: CatalogState) -> bool:
    """After the probe fired: True when the schema really differs from ``state``'s.

    On a false alarm the counts and the reference move forward to what was just compared.
    """
    now = await record(conn)
    if now.digest != state.digest:
        return True
    state.counts, state.reference_xid = now.counts, now.reference_xid
    return False


# Schema-defining columns only: no relfilenode, statistics, frozen xids or lazily cleared
# flags (relhasindex, relhastriggers...). Node trees as stored text: recreating an object gives
# it a new oid anyway. Temporary objects are left out.
_DIGESTED = rf"""
SELECT 'n' || row(oid, nspname, nspowner, nspacl)::text FROM pg_namespace WHERE NOT ({_IS_TEMP_NS})
UNION ALL SELECT 'c' || row(oid, relname, relnamespace, reltype, reloftype, relowner, relam,
    reltoastrelid, relkind, relnatts, relchecks, relrowsecurity, relforcerowsecurity,
    relreplident, relispartition, relacl, reloptions, relpartbound::text, relpersistence)::text
  FROM pg_class WHERE oid >= 16384 AND relpersistence <> 't'
UNION ALL SELECT 'a' || row(a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attndims,
    a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated, a.attisdropped, a.attislocal,
    a.attinhcount, a.attcollation, a.attacl)::text
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  WHERE a.attrelid >= 16384 AND c.relpersistence <> 't'
UNION ALL SELECT 'd' || row(d.oid, d.adrelid, d.adnum, d.adbin::text)::text
  FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid WHERE c.relpersistence <> 't'
UNION ALL SELECT 't' || row(oid, typname, typnamespace, typowner, typtype, typrelid, typelem,
    typarray, typbasetype, typtypmod, typnotnull, typndims, typcollation, typdefault, typacl)::text
  FROM pg_type WHERE oid >= 16384 AND typnamespace <> ALL({_TEMP})
UNION ALL SELECT 'e' || row(oid, enumtypid, enumsortorder, enumlabel)::text FROM pg_enum
UNION ALL SELECT 'p' || row(oid, proname, pronamespace, proowner, prolang, prokind, prosecdef,
    proleakproof, proisstrict, proretset, provolatile, proparallel, prorettype,
    proargtypes::text, proallargtypes, proargmodes, proargnames, md5(prosrc), probin,
    proconfig, proacl, md5(prosqlbody::text))::text
  FROM pg_proc WHERE oid >= 16384 AND pronamespace <> ALL({_TEMP})
UNION ALL SELECT 'D' || row(objoid, classoid, objsubid, md5(description))::text
  FROM pg_description WHERE objoid >= 16384
UNION ALL SELECT 'A' || row(oid, defaclrole, defaclnamespace, defaclobjtype, defaclacl)::text
  FROM pg_default_acl
UNION ALL SELECT 'X' || row(oid, stxrelid, stxname, stxnamespace, stxowner, stxkeys, stxkind,
    stxexprs::text)::text FROM pg_statistic_ext
UNION ALL SELECT 'T' || row(oid, cfgname, cfgnamespace, cfgowner, cfgparser)::text
  FROM pg_ts_config WHERE oid >= 16384
UNION ALL SELECT 'E' || row(classid, objid, objsubid, refobjid)::text
  FROM pg_depend WHERE deptype = 'e'
UNION ALL SELECT 'M' || row(mapcfg, maptokentype, mapseqno, mapdict)::text
  FROM pg_ts_config_map WHERE mapcfg >= 16384
UNION ALL SELECT 'k' || row(oid, conname, connamespace, contype, condeferrable, condeferred,
    convalidated, conrelid, contypid, conindid, confrelid, confupdtype, confdeltype,
    confmatchtype, conkey, confkey, conbin::text)::text
  FROM pg_constraint WHERE connamespace <> ALL({_TEMP})
UNION ALL SELECT 'i' || row(i.indexrelid, i.indrelid, i.indnatts, i.indnkeyatts, i.indisunique,
    i.indisprimary, i.indisexclusion, i.indimmediate, i.indkey::text,
    i.indcollation::text, i.indclass::text, i.indoption::text, i.indexprs::text,
    i.indpred::text)::text
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  WHERE i.indexrelid >= 16384 AND c.relpersistence <> 't'
UNION ALL SELECT 'g' || row(g.oid, g.tgrelid, g.tgparentid, g.tgname, g.tgfoid, g.tgtype,
    g.tgenabled, g.tgisinternal, g.tgconstraint, g.tgdeferrable, g.tginitdeferred,
    g.tgattr::text, g.tgargs, g.tgqual::text)::text
  FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid WHERE c.relpersistence <> 't'
UNION ALL SELECT 'r' || row(r.oid, r.rulename, r.ev_class, r.ev_type, r.ev_enabled, r.is_instead,
    r.ev_qual::text, r.ev_action::text)::text
  FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
  WHERE r.ev_class >= 16384 AND c.relpersistence <> 't'
UNION ALL SELECT 's' || row(seqrelid, seqtypid, seqstart, seqincrement, seqmax, seqmin,
    seqcache, seqcycle)::text FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
  WHERE c.relpersistence <> 't'
UNION ALL SELECT 'y' || row(p.oid, p.polname, p.polrelid, p.polcmd, p.polpermissive, p.polroles,
    p.polqual::text, p.polwithcheck::text)::text FROM pg_policy p
UNION ALL SELECT 'h' || row(inhrelid, inhparent, inhseqno)::text FROM pg_inherits
"""

_RECORD = f"""
WITH {TEMP_CTE}
SELECT (SELECT md5(string_agg(line, E'\n' ORDER BY line)) FROM ({_DIGESTED}) AS d(line)) AS digest,
       ARRAY[{_count_columns()}]::bigint[] AS counts,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint - 1 AS xid
"""


def probe_query(columns_of: Sequence[int]) -> str:
    """True when the catalogs may have changed since ``$1`` (the reference xid, as text) given
    the counts ``$2``; then :func:`confirm` tells a real change from a harmless write."""
    body = probe_sql(columns_of).replace("$3::bigint[]", "$2::bigint[]")
    return (
        f"WITH ref AS (SELECT age($1::text::xid8::xid) AS cat), {TEMP_CTE}\nSELECT EXISTS ({body})"
    )
