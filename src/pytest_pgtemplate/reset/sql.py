"""The change tracking the plugin installs into every template, as SQL.

Everything lives in the schema ``pgtemplate`` (plus one statement trigger per table, named
``pgtemplate_mark``, and, for a superuser, two event triggers), so it is cloned with the
template for free and never mixes with the application's objects. What it records:

- ``dirty``: tables a statement wrote to since the last reset, marked by an ``AFTER ... FOR EACH
  STATEMENT`` trigger (INSERT, UPDATE, DELETE, TRUNCATE; COPY, MERGE, FK cascades and writes by
  other triggers are statements too). The mark is transactional: a rolled-back write leaves none,
  and needs none, since its rows are gone too. It is a plain insert into a table without a key:
  two transactions writing one table never wait for each other's mark.
- ``ddl``: what DDL ran, marked by event triggers (``ddl_command_end``, ``sql_drop``); temporary
  objects are left out. ``REFRESH MATERIALIZED VIEW`` and ``ALTER SEQUENCE`` get kinds of their
  own, since they change data, not the schema, when nothing else changed.
- ``sequences``: every sequence as the template holds it. nextval() is not transactional and
  fires no trigger, so the check compares them (one function call each, no dependency on them).
- for a superuser where ``pg_walinspect`` exists (PostgreSQL 15+), a mark that survives a
  rollback: every change to a logged sequence writes WAL (the first nextval() after a setval()
  does, and the template's and every restore's setval() leave each sequence so), so the
  procedure ``pgtemplate.check`` flushes the WAL, reads what was written since the last reset
  and compares only the sequences named there (``CREATE_WAL_MARKS``). When more WAL was
  written than comparing every sequence would cost to read, it compares every sequence.

One query (``check_query``, or the procedure, which runs the same query) answers what changed,
in one round trip; after a test, as superuser, it also restores what a typical test leaves
(``create_restore_in_check``), and the client plans the restore of everything else.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

SCHEMA = "pgtemplate"
MARK_TRIGGER = "pgtemplate_mark"
EVENT_TRIGGERS = ("pgtemplate_ddl", "pgtemplate_drop")
RESTORING = "pgtemplate.restoring"
"""A transaction-local setting the restore sets, so its own DDL (trigger switches) is no mark."""
ROWS_SINCE = "rows_since"
"""The key in ``pgtemplate.state`` of the oldest transaction whose rows the check after a test may
not have seen restored: a row of a seeded table written by it or a later one is a test's, every
older row a seed row. Set when a clone is opened, and by a restore inside the check to that
check's snapshot horizon (older transactions had all finished: their marks were read)."""
ROWS_BY = "rows_by"
"""The key of the transaction of the last restore inside the check: the seed rows it put back
are newer than its own horizon, yet seed rows (0 when there was none)."""

CREATE_SCHEMA = r"""
CREATE SCHEMA pgtemplate;
COMMENT ON SCHEMA pgtemplate IS
  'pytest-pgtemplate: change tracking for the per-test reset; not part of the application';
CREATE UNLOGGED TABLE pgtemplate.dirty (rel oid NOT NULL);  -- no key: a mark never waits
CREATE UNLOGGED TABLE pgtemplate.ddl (kind text NOT NULL, rel oid, what text NOT NULL);
CREATE TABLE pgtemplate.tables (
  rel oid PRIMARY KEY, leaves oid[] NOT NULL, sequences oid[] NOT NULL,
  rank int NOT NULL, empty text, refill text,  -- empty: NULL where the check may not restore
  allowance bigint NOT NULL);  -- bytes of its leaves at build a restore need not write again
CREATE TABLE pgtemplate.sequences (
  rel oid PRIMARY KEY, seen bigint, options text NOT NULL, logged boolean NOT NULL,
  last_value bigint NOT NULL);  -- seen is NULL while is_called is false: last_value tells
CREATE TABLE pgtemplate.state (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE pgtemplate.large_objects (loid oid PRIMARY KEY, owner oid NOT NULL, data bytea);
GRANT USAGE ON SCHEMA pgtemplate TO PUBLIC;
GRANT SELECT, INSERT ON pgtemplate.dirty, pgtemplate.ddl TO PUBLIC;

CREATE FUNCTION pgtemplate.mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO pgtemplate.dirty VALUES (TG_RELID);
  RETURN NULL;
END $$;

CREATE FUNCTION pgtemplate.sequence_options(seq oid) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT row(c.relname, c.relnamespace, c.relowner, c.relpersistence, s.seqtypid, s.seqstart,
             s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
             (SELECT array_agg(row(d.refobjid, d.refobjsubid, d.deptype)::text ORDER BY 1)
              FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = seq
                AND d.refclassid = 'pg_class'::regclass))::text
  FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid WHERE c.oid = seq
$$;

CREATE FUNCTION pgtemplate.settings() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(string_agg(s.setrole::text || '=' || array_to_string(s.setconfig, E'\x1f'),
                             E'\x1e' ORDER BY s.setrole), '')
  FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
  WHERE d.datname = current_database()
$$;

CREATE FUNCTION pgtemplate.event_triggers() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(string_agg(evtname || ':' || evtenabled::text, ',' ORDER BY evtname), '')
  FROM pg_event_trigger
$$;

"""

# Only a superuser may create event triggers; without them, the catalog probe (``probe``) stands in.
CREATE_EVENT_TRIGGERS = r"""
CREATE FUNCTION pgtemplate.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('pgtemplate.restoring', true) = 'on' THEN RETURN; END IF;
  INSERT INTO pgtemplate.ddl (kind, rel, what)
  SELECT CASE c.command_tag WHEN 'REFRESH MATERIALIZED VIEW' THEN 'refresh'
                            WHEN 'ALTER SEQUENCE' THEN 'sequence' ELSE 'schema' END,
         CASE WHEN c.classid = 'pg_class'::regclass THEN c.objid END,
         c.command_tag || coalesce(' ' || c.object_identity, '')
  FROM pg_event_trigger_ddl_commands() c
  WHERE c.schema_name IS DISTINCT FROM 'pg_temp';
END $$;
CREATE FUNCTION pgtemplate.on_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('pgtemplate.restoring', true) = 'on' THEN RETURN; END IF;
  INSERT INTO pgtemplate.ddl (kind, rel, what)
  SELECT 'schema', NULL, 'DROP ' || upper(o.object_type) || ' ' || o.object_identity
  FROM pg_event_trigger_dropped_objects() o
  WHERE NOT o.is_temporary AND o.object_identity !~ '(^| on )pg_temp\.';  -- a temp view's rule
END $$;
CREATE EVENT TRIGGER pgtemplate_ddl ON ddl_command_end EXECUTE FUNCTION pgtemplate.on_ddl();
CREATE EVENT TRIGGER pgtemplate_drop ON sql_drop EXECUTE FUNCTION pgtemplate.on_drop();
ALTER EVENT TRIGGER pgtemplate_ddl ENABLE ALWAYS;
ALTER EVENT TRIGGER pgtemplate_drop ENABLE ALWAYS;
"""


CLUSTERED = (
    "SELECT coalesce(string_agg(indexrelid::text, ',' ORDER BY indexrelid), '') FROM pg_index"
    " WHERE indisclustered"
)
DATABASE = (  # what a test can change of the database itself (a shared object: no event trigger)
    "SELECT row(datdba, datconnlimit, datacl, datallowconn, dattablespace)::text FROM pg_database"
    " WHERE datname = current_database()"
)


def mark_trigger(table: str) -> str:
    """``ENABLE ALWAYS``: it fires under ``session_replication_role = replica`` too."""
    return (
        f"CREATE TRIGGER {MARK_TRIGGER} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION pgtemplate.mark();"
        f" ALTER TABLE {table} ENABLE ALWAYS TRIGGER {MARK_TRIGGER}"
    )


# kind: busy (pid, what it does), prepared (gid), schema (what DDL), table (rel, bytes of the
# tables it covers), sequence (rel), refresh (rel), large_objects, settings, database (name).
# {sequences} / {marked_sequences}: which sequences are compared (every one after a test,
# those of marked tables before one; or, in the procedure, those the WAL names); {databases}:
# report databases that appeared on the server. One plain query, prepared once per connection: no
# function call (each costs a plan) on the path where nothing changed. The two switches are
# literals, not parameters: a statement with parameters gets a custom plan at every execution
# when the planner prices the generic one higher, as it did here (about 1 ms of planning per
# check: benchmarks/check_cost.py); one without any is planned once, its dead branches folded
# away. The CASE keeps the order: the planner sorts a WHERE's conditions by their cost, and ran
# the (cheap) sequence read before a parameterised condition, so it read every sequence. A
# marked table's row, each of its sequences and an altered sequence's options are found by key (a
# scalar subquery, LATERAL ones kept apart by OFFSET 0): joined, the planner hashed all of
# pgtemplate.tables and scanned every sequence for a few marks (0.15 ms each at 1000 tables).
_CHECK = r"""
WITH me AS (SELECT oid AS db FROM pg_database WHERE datname = current_database()),
state AS (
  SELECT max(value) FILTER (WHERE key = 'ref') AS ref,
         max(value) FILTER (WHERE key = 'settings') AS settings,
         max(value) FILTER (WHERE key = 'event_triggers') AS event_triggers,
         max(value) FILTER (WHERE key = 'databases_seen') AS databases_seen,
         max(value) FILTER (WHERE key = 'clustered') AS clustered,
         max(value) FILTER (WHERE key = 'database') AS database
  FROM pgtemplate.state WHERE key <> 'layout'),
marked AS (SELECT DISTINCT rel FROM pgtemplate.dirty),
found AS (
SELECT 'busy' AS kind, a.pid::oid AS rel, a.state || ': ' || left(a.query, 120) AS detail
FROM pg_stat_get_activity(NULL) a, me
WHERE a.datid = me.db AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
  AND coalesce(a.state, 'idle') <> 'idle'
UNION ALL SELECT 'prepared', NULL, p.gid FROM pg_prepared_xacts p
WHERE p.database = current_database()
UNION ALL SELECT 'schema', d.rel, d.what FROM pgtemplate.ddl d WHERE d.kind = 'schema'
UNION ALL SELECT 'schema', NULL, 'CREATE, ALTER or DROP EVENT TRIGGER' FROM state
WHERE (SELECT coalesce(string_agg(evtname || ':' || evtenabled::text, ',' ORDER BY evtname), '')
       FROM pg_event_trigger) IS DISTINCT FROM state.event_triggers
UNION ALL SELECT 'schema', NULL, 'CLUSTER (an index marked clustered)' FROM state
WHERE CASE WHEN {index_written}
      THEN (SELECT coalesce(string_agg(indexrelid::text, ',' ORDER BY indexrelid), '')
            FROM pg_index WHERE indisclustered) IS DISTINCT FROM state.clustered
      ELSE false END
UNION ALL SELECT 'schema', NULL, 'ALTER or GRANT ON DATABASE (owner, ACL, connection limit)'
FROM state, pg_database d
WHERE d.datname = current_database() AND row(d.datdba, d.datconnlimit, d.datacl, d.datallowconn,
      d.dattablespace)::text IS DISTINCT FROM state.database
UNION ALL SELECT 'schema', d.rel, d.what FROM pgtemplate.ddl d,
LATERAL (SELECT s.options FROM pgtemplate.sequences s WHERE s.rel = d.rel OFFSET 0) s
WHERE d.kind = 'sequence' AND pgtemplate.sequence_options(d.rel) IS DISTINCT FROM s.options
UNION ALL SELECT 'table', m.rel, (SELECT sum(pg_relation_size(l))::text
                                  FROM pgtemplate.tables t, unnest(t.leaves) l WHERE t.rel = m.rel)
FROM marked m
{sequences}
UNION ALL SELECT DISTINCT 'sequence', s.rel, NULL::text
FROM marked m,
LATERAL (SELECT q FROM pgtemplate.tables t, unnest(t.sequences) q WHERE t.rel = m.rel OFFSET 0) x,
LATERAL (SELECT s.rel, s.seen FROM pgtemplate.sequences s WHERE s.rel = x.q OFFSET 0) s
WHERE CASE WHEN {marked_sequences}
      THEN pg_sequence_last_value(s.rel) IS DISTINCT FROM s.seen ELSE false END
UNION ALL SELECT d.kind, d.rel, NULL FROM pgtemplate.ddl d WHERE d.kind IN ('sequence', 'refresh')
UNION ALL SELECT 'large_objects', NULL, NULL FROM state
WHERE (SELECT count(*) FROM pg_largeobject_metadata)
        <> (SELECT count(*) FROM pgtemplate.large_objects)
   OR EXISTS (SELECT FROM pg_largeobject_metadata WHERE age(xmin) < age(state.ref::xid8::xid))
   {large_object_data}
UNION ALL SELECT 'settings', NULL, NULL FROM state, me
WHERE (SELECT coalesce(string_agg(s.setrole::text || '=' || array_to_string(s.setconfig, E''),
                                  E'' ORDER BY s.setrole), '')
       FROM pg_db_role_setting s WHERE s.setdatabase = me.db) IS DISTINCT FROM state.settings
UNION ALL SELECT 'database', NULL, d.datname::text FROM pg_database d, state
WHERE {databases} AND age(d.xmin) < age(state.databases_seen::xid8::xid)
  AND d.datname NOT LIKE 'pgtemplate\_%')
SELECT kind, rel, detail FROM found
{restore}"""
# pg_largeobject (the data) is readable by a superuser only: others see lo_put() on an existing
# large object only through its metadata, which lo_put() leaves alone.
_LARGE_OBJECT_DATA = (
    "OR EXISTS (SELECT FROM pg_largeobject WHERE age(xmin) < age(state.ref::xid8::xid))"
)


# After a test, as superuser: what the check found is restored by the same statement when it is
# rows of small tables and moved sequences only (``create_restore_in_check``); the row
# 'restored' says so. Called only when something was found: nothing changed costs no call. The
# horizon is this statement's snapshot's, the one that read the marks (``ROWS_SINCE``).
_RESTORE = """UNION ALL SELECT 'restored', NULL, NULL
WHERE CASE WHEN EXISTS (SELECT FROM found)
      THEN pgtemplate.restore_found(ARRAY(SELECT kind FROM found), ARRAY(SELECT rel FROM found),
                                    ARRAY(SELECT detail FROM found),
                                    pg_snapshot_xmin(pg_current_snapshot()))
      ELSE false END"""


_EVERY_SEQUENCE = """UNION ALL SELECT 'sequence', s.rel, NULL FROM pgtemplate.sequences s
WHERE CASE WHEN {every_sequence}
      THEN pg_sequence_last_value(s.rel) IS DISTINCT FROM s.seen ELSE false END"""
# In the procedure: every sequence only when the WAL could not be read (the condition on the
# variable alone is a one-time filter: nothing is scanned otherwise), else those the WAL names
# (and the unlogged ones), each found by key (joined, the planner hashed the WAL's few against
# a scan of every sequence: 0.11 ms at 1,000 tables). The outer OFFSET 0 keeps the sequence read
# out of the scan below it: pushed down, it would run on every row. ``unread``: a
# sequence never called in the template that pg_sequence_last_value() cannot tell apart (NULL
# while is_called is false, whatever the value); the procedure reads it itself.
_WAL_SEQUENCES = """UNION ALL SELECT 'sequence', s.rel, NULL FROM pgtemplate.sequences s
WHERE v_moved IS NULL AND pg_sequence_last_value(s.rel) IS DISTINCT FROM s.seen
UNION ALL SELECT CASE WHEN n.now IS NULL AND n.seen IS NULL THEN 'unread' ELSE 'sequence' END,
                 n.rel, CASE WHEN n.now IS NULL AND n.seen IS NULL THEN n.last_value::text END
FROM (SELECT s.rel, s.seen, s.last_value, pg_sequence_last_value(s.rel) AS now
      FROM unnest(v_moved) m,
      LATERAL (SELECT s.rel, s.seen, s.last_value FROM pgtemplate.sequences s WHERE s.rel = m
               OFFSET 0) s OFFSET 0) n
WHERE n.now IS DISTINCT FROM n.seen OR n.seen IS NULL"""


def _render(
    superuser: bool,
    sequences: str,
    marked_sequences: str,
    databases: str,
    *,
    index_written: str = "true",
    restore: bool = False,
) -> str:
    return (
        _CHECK.replace("{restore}", _RESTORE if restore else "")
        .replace("{large_object_data}", _LARGE_OBJECT_DATA if superuser else "")
        .replace("{index_written}", index_written)
        .replace("{sequences}", sequences)
        .replace("{marked_sequences}", marked_sequences)
        .replace("{databases}", databases)
    )


@functools.cache
def check_query(
    superuser: bool, *, all_sequences: bool, databases: bool, restore: bool = False
) -> str:
    """``all_sequences``: the check after a test (the one before compares the sequences of
    marked tables); ``restore`` (superuser only): it restores what it can itself."""
    every = "true" if all_sequences else "false"
    sequences = _EVERY_SEQUENCE.replace("{every_sequence}", every)
    switch = "true" if databases else "false"
    return _render(superuser, sequences, "NOT " + every, switch, restore=restore and superuser)


def create_restore_in_check(truncate_above: int) -> str:
    """``pgtemplate.restore_found``: what the check after a test found, restored in the check's
    own statement, one round trip instead of two. Only the plain cases: marked tables grown by
    at most ``truncate_above`` bytes since the build (``pgtemplate.tables.allowance``: the size
    at build of the leaves it does not refill whole), each leaf with its statements recorded at
    build (none for a table
    whose triggers or rules fire as replica: the client switches those off around its restore),
    and moved sequences; the session is replica, so foreign keys stay quiet. For anything else
    (another kind of change, a bigger table, a table created since) it does nothing and returns
    false: the client plans the restore. The restore's own writes mark the tables again; their
    marks go with the test's. A seeded leaf with a primary key loses only the rows written
    since ``ROWS_SINCE`` and gets back the seed rows it misses (``diff_empty``, ``diff_refill``):
    emptied and refilled whole at every restore, a table grew by its seed each time (space a
    DELETE frees is reused only after a VACUUM), until it was big enough to be TRUNCATEd with
    every table referring to it (``benchmarks/seed_growth.py``). ``p_horizon``: the check's
    snapshot's xmin."""
    return rf"""
CREATE FUNCTION pgtemplate.restore_found(
  p_kinds text[], p_rels oid[], p_details text[], p_horizon xid8)
RETURNS boolean LANGUAGE plpgsql AS $restore$
DECLARE
  v_marked oid[];
  v_sequences oid[];
  v_big boolean;
  v_leaves oid[];
  v_empty text[];
  v_refill text[];
  v_since xid;
  v_by xid;
  v_i int;
BEGIN
  IF NOT (p_kinds <@ '{{table,sequence}}'::text[])
     OR current_setting('session_replication_role') <> 'replica' THEN
    RETURN false;
  END IF;
  -- Big: what a table's leaves grew by since the build (their seed rows with a key are left in
  -- place, not written again) is past the size the client TRUNCATEs at.
  SELECT array_agg(u.r) FILTER (WHERE u.k = 'table'),
         array_agg(u.r) FILTER (WHERE u.k = 'sequence'),
         coalesce(bool_or(u.k = 'table' AND u.d::bigint - (
           SELECT t.allowance FROM pgtemplate.tables t WHERE t.rel = u.r) > {truncate_above}),
           false)
  INTO v_marked, v_sequences, v_big
  FROM unnest(p_kinds, p_rels, p_details) AS u(k, r, d);
  IF v_big THEN
    RETURN false;
  END IF;
  IF v_marked IS NOT NULL THEN
    -- By key, each: a join (NOT EXISTS became a hash anti join) reads all of pgtemplate.tables
    -- for a few marks, 0.14 ms at 1,000 tables.
    IF (SELECT count(*) FROM unnest(v_marked) m,
        LATERAL (SELECT FROM pgtemplate.tables t WHERE t.rel = m OFFSET 0) t)
       < cardinality(v_marked) THEN
      RETURN false;  -- a table created since: a schema change, the client's to report
    END IF;
    SELECT array_agg(x.rel ORDER BY x.rank), array_agg(x.empty ORDER BY x.rank),
           array_agg(x.refill ORDER BY x.rank)
    INTO v_leaves, v_empty, v_refill
    FROM (SELECT DISTINCT l FROM unnest(v_marked) m,
          LATERAL (SELECT t.leaves FROM pgtemplate.tables t WHERE t.rel = m OFFSET 0) t,
          unnest(t.leaves) l) ls,
         LATERAL (SELECT t.rel, t.empty, t.refill, t.rank FROM pgtemplate.tables t
                  WHERE t.rel = ls.l OFFSET 0) x;
    IF array_position(v_empty, NULL) IS NOT NULL THEN
      RETURN false;
    END IF;
    IF EXISTS (SELECT FROM unnest(v_refill) r WHERE r IS NOT NULL) THEN
      -- Seeded leaves lose only the rows written since ('{ROWS_SINCE}'), then get back the
      -- seed rows they miss: a guard, should that point ever be unknown or far behind.
      SELECT max(value) FILTER (WHERE key = '{ROWS_SINCE}')::xid8::xid,
             max(value) FILTER (WHERE key = '{ROWS_BY}')::xid8::xid
      INTO v_since, v_by FROM pgtemplate.state WHERE key IN ('{ROWS_SINCE}', '{ROWS_BY}');
      IF v_since IS NULL OR v_by IS NULL OR age(v_since) > 1000000000 THEN
        RETURN false;
      END IF;
    END IF;
    FOR v_i IN 1 .. coalesce(array_length(v_leaves, 1), 0) LOOP
      EXECUTE v_empty[v_i] USING v_since, v_by;
      IF v_refill[v_i] IS NOT NULL THEN
        EXECUTE v_refill[v_i];
      END IF;
    END LOOP;
    DELETE FROM pgtemplate.dirty WHERE rel = ANY (v_marked || coalesce(v_leaves, '{{}}'));
    IF v_since IS NOT NULL THEN
      UPDATE pgtemplate.state
      SET value = CASE key WHEN '{ROWS_SINCE}' THEN p_horizon ELSE pg_current_xact_id() END::text
      WHERE key IN ('{ROWS_SINCE}', '{ROWS_BY}');
    END IF;
  END IF;
  IF v_sequences IS NOT NULL THEN
    PERFORM setval(s.rel, s.last_value, s.seen IS NOT NULL)
    FROM unnest(v_sequences) q,
         LATERAL (SELECT s.rel, s.last_value, s.seen FROM pgtemplate.sequences s
                  WHERE s.rel = q OFFSET 0) s;
    DELETE FROM pgtemplate.ddl WHERE kind = 'sequence';  -- ALTER SEQUENCE ... RESTART's mark
  END IF;
  RETURN true;
END $restore$;
"""


def diff_empty(table: str) -> str:
    """A seeded leaf's rows written since ``$1`` (``ROWS_SINCE``) but by the last restore ``$2``
    (``ROWS_BY``): the test's, inserted or the new versions of what it updated. A seed row put
    back once is not written again at every later restore."""
    return f"DELETE FROM ONLY {table} WHERE age(xmin) <= age($1::xid) AND xmin <> $2::xid"


def diff_refill(
    table: str, columns: str, seed: str, key: Sequence[str], *, overriding: bool = False
) -> str:
    """The seed rows a seeded leaf misses, by its primary key ``key`` (quoted column names):
    those the test deleted or updated (``diff_empty`` took the new versions)."""
    match = " AND ".join(f"x.{column} = s.{column}" for column in key)
    system = " OVERRIDING SYSTEM VALUE" if overriding else ""
    return (
        f"INSERT INTO {table} ({columns}){system} SELECT {columns} FROM {seed} s"
        f" WHERE NOT EXISTS (SELECT FROM ONLY {table} x WHERE {match})"
    )


CALL_CHECK = "CALL pgtemplate.check($1, $2, $3, $4)"
"""Returns one row: ``kinds``, ``rels``, ``details`` (the query's rows as arrays), ``upto`` (the
WAL read up to: the next check's start) and ``wal`` (false: every sequence was compared). The
fourth argument: restore what it can (``create_restore_in_check``)."""


def create_wal_marks(walinspect_schema: str, unlogged: Sequence[int] = ()) -> str:
    """The procedure behind ``CALL_CHECK``: a flush, then the check, in one round trip.

    A procedure, because only a COMMIT flushes the WAL (pg_walinspect reads flushed WAL only),
    and the rolled-back transaction of a failed INSERT never flushes its own nextval(); when not
    a byte of WAL was written since the last check (a lone worker's test that wrote nothing),
    there is nothing to flush or read. A transaction that holds an xid and wrote WAL waits for
    the flush at commit when ``synchronous_commit`` is ``local`` (not ``on``, which would also
    wait for a synchronous standby), whatever the session's setting. The sequences compared:
    those the WAL names, those of marked tables (TRUNCATE ... RESTART IDENTITY gives a sequence
    a new file, which ``wal_level = minimal`` does not log), and the ``unlogged`` ones (never
    logged).
    The same pass over the WAL tells whether a row of ``pg_index`` was written (``CLUSTER``
    marks an index and fires no event trigger): only then is ``pg_index`` read.
    """
    check = _render(
        True,
        _WAL_SEQUENCES,
        "v_moved IS NOT NULL",
        "p_databases",
        index_written="v_moved IS NULL OR v_index",
    )
    unlogged_oids = "{" + ",".join(str(oid) for oid in sorted(unlogged)) + "}"
    return rf"""
CREATE SEQUENCE pgtemplate.flush;
CREATE PROCEDURE pgtemplate.check(
  p_from pg_lsn, p_budget bigint, p_databases boolean, p_restore boolean,
  INOUT kinds text[] DEFAULT NULL, INOUT rels oid[] DEFAULT NULL,
  INOUT details text[] DEFAULT NULL, INOUT upto pg_lsn DEFAULT NULL,
  INOUT wal boolean DEFAULT NULL)
LANGUAGE plpgsql AS $check$
DECLARE
  v_moved oid[];
  v_index boolean;
  v_db oid;
  v_space oid;
  v_index_ref text;
  v_kinds text[];
  v_rels oid[];
  v_details text[];
  v_i int;
  v_now bigint;
  v_horizon xid8;
BEGIN
  -- Not a byte of WAL since the last check's flush (by anyone on the server): no logged
  -- sequence moved and no row of pg_index changed, and there is nothing to flush or read. A
  -- budget of 0 asks for every sequence to be compared, whatever was written.
  IF p_from IS NOT NULL AND p_budget > 0 AND pg_current_wal_insert_lsn() = p_from THEN
    upto := p_from;
    v_moved := '{unlogged_oids}'::oid[];
    v_index := false;
  ELSIF pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn() THEN
    -- Everything written so far is flushed already (a synchronous commit, another check's
    -- flush): readable as it is, and a flush of our own would only write more WAL, which the
    -- next check on any worker would then have to flush and read.
    upto := pg_current_wal_flush_lsn();
  ELSE
    PERFORM set_config('synchronous_commit', 'local', true);
    PERFORM pg_current_xact_id(), setval('pgtemplate.flush', 1);
    COMMIT;
    upto := pg_current_wal_flush_lsn();
  END IF;
  IF v_moved IS NULL AND p_from IS NOT NULL AND upto > p_from AND upto - p_from <= p_budget THEN
    SELECT d.oid, d.dattablespace INTO v_db, v_space
    FROM pg_database d WHERE d.datname = current_database();
    v_index_ref := format('rel %s/%s/%s fork', v_space, v_db,
                          pg_relation_filenode('pg_catalog.pg_index'));
    BEGIN
      -- A sequence's record reads 'rel <tablespace>/<database>/<file>' (14 to 18); split, not
      -- matched by a regular expression (about 25 us a record), and each file looked up once.
      -- Should the form ever change, the cast fails and every sequence is compared.
      SELECT coalesce(array_agg(r.oid) FILTER (WHERE r.oid IS NOT NULL), '{{}}'),
             coalesce(bool_or(r.catalog_index), false)
      INTO v_moved, v_index
      FROM (
        SELECT pg_filenode_relation(CASE WHEN f.space = v_space THEN 0 ELSE f.space END,
                                    f.file)::oid AS oid,
               f.catalog_index
        FROM (SELECT DISTINCT
                CASE WHEN w.seq THEN substr(split_part(w.description, '/', 1), 5)::oid END
                  AS space,
                CASE WHEN w.seq THEN split_part(w.description, '/', 3)::oid END AS file,
                w.resource_manager IN ('Heap', 'Heap2')
                  AND strpos(w.block_ref, v_index_ref) > 0 AS catalog_index
              FROM (SELECT i.*, i.resource_manager = 'Sequence'
                              AND split_part(i.description, '/', 2) = v_db::text AS seq
                    FROM {walinspect_schema}.pg_get_wal_records_info(p_from, upto) i) w) f) r;
      v_moved := v_moved || '{unlogged_oids}'::oid[];
    EXCEPTION WHEN OTHERS THEN  -- the WAL is gone (a checkpoint recycled it), or reads otherwise:
      -- compare them all
      v_moved := NULL;
    END;
  END IF;
  wal := v_moved IS NOT NULL;
  SELECT array_agg(c.kind), array_agg(c.rel), array_agg(c.detail),
         pg_snapshot_xmin(pg_current_snapshot())
  INTO kinds, rels, details, v_horizon
  FROM ({check}) c;
  -- A setval(s, v, false) on a sequence never called in the template looks like no move to
  -- pg_sequence_last_value(); those the WAL names (rarely any) are read themselves. A plain
  -- expression, not a query, on the path where there are none.
  IF 'unread' = ANY (kinds) THEN
    v_kinds := kinds; v_rels := rels; v_details := details;
    kinds := '{{}}'; rels := '{{}}'; details := '{{}}';
    FOR v_i IN 1 .. array_length(v_kinds, 1) LOOP
      IF v_kinds[v_i] = 'unread' THEN
        EXECUTE format('SELECT last_value FROM %s', v_rels[v_i]::regclass) INTO v_now;
        CONTINUE WHEN v_now = v_details[v_i]::bigint;
        v_kinds[v_i] := 'sequence';
      END IF;
      kinds := kinds || v_kinds[v_i];
      rels := rels || v_rels[v_i];
      details := details || CASE WHEN v_kinds[v_i] = 'sequence' THEN NULL ELSE v_details[v_i] END;
    END LOOP;
  END IF;
  -- Once those are known (a restore's own setval() writes WAL the next check reads: they are
  -- met there), what was found is restored here where it can be (create_restore_in_check).
  IF p_restore AND cardinality(kinds) > 0
     AND pgtemplate.restore_found(kinds, rels, details, v_horizon) THEN
    kinds := kinds || 'restored'::text;
    rels := rels || NULL::oid;
    details := details || NULL::text;
  END IF;
END $check$;
"""


def tracking_digest() -> str:
    """A digest of every statement the tracking installs or runs: a template built with other
    SQL (a procedure without a later fix, say) is never reused, even if no one remembered to
    bump the version by hand."""
    texts = [
        CREATE_SCHEMA,
        CREATE_EVENT_TRIGGERS,
        mark_trigger("t"),
        create_wal_marks("s", (1,)),
        create_restore_in_check(1),
        diff_empty("t"),
        diff_refill("t", "k, v", "s", ["k"], overriding=True),
        check_query(True, all_sequences=True, databases=True, restore=True),
    ]
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
