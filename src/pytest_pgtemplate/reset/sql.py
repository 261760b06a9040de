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
in one round trip; the restore itself is planned by the client.
"""

from __future__ import annotations

import functools

SCHEMA = "pgtemplate"
MARK_TRIGGER = "pgtemplate_mark"
EVENT_TRIGGERS = ("pgtemplate_ddl", "pgtemplate_drop")
RESTORING = "pgtemplate.restoring"
"""A transaction-local setting the restore sets, so its own DDL (trigger switches) is no mark."""

CREATE_SCHEMA = r"""
CREATE SCHEMA pgtemplate;
COMMENT ON SCHEMA pgtemplate IS
  'pytest-pgtemplate: change tracking for the per-test reset; not part of the application';
CREATE UNLOGGED TABLE pgtemplate.dirty (rel oid NOT NULL);  -- no key: a mark never waits
CREATE UNLOGGED TABLE pgtemplate.ddl (kind text NOT NULL, rel oid, what text NOT NULL);
CREATE TABLE pgtemplate.tables (
  rel oid PRIMARY KEY, leaves oid[] NOT NULL, sequences oid[] NOT NULL);
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
# {every_sequence} / {marked_sequences}: which sequences are compared (every one after a test,
# those of marked tables before one; or, in the procedure, those the WAL names); {databases}:
# report databases that appeared on the server. One plain query, prepared once per connection: no
# function call (each costs a plan) on the path where nothing changed. The two switches are
# literals, not parameters: a statement with parameters gets a custom plan at every execution
# when the planner prices the generic one higher, as it did here (about 1 ms of planning per
# check: benchmarks/check_cost.py); one without any is planned once, its dead branches folded
# away. The CASE keeps the order: the planner sorts a WHERE's conditions by their cost, and ran
# the (cheap) sequence read before a parameterised condition, so it read every sequence.
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
marked AS (SELECT DISTINCT rel FROM pgtemplate.dirty)
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
WHERE (SELECT coalesce(string_agg(indexrelid::text, ',' ORDER BY indexrelid), '') FROM pg_index
       WHERE indisclustered) IS DISTINCT FROM state.clustered
UNION ALL SELECT 'schema', NULL, 'ALTER or GRANT ON DATABASE (owner, ACL, connection limit)'
FROM state, pg_database d
WHERE d.datname = current_database() AND row(d.datdba, d.datconnlimit, d.datacl, d.datallowconn,
      d.dattablespace)::text IS DISTINCT FROM state.database
UNION ALL SELECT 'schema', d.rel, d.what FROM pgtemplate.ddl d
JOIN pgtemplate.sequences s ON s.rel = d.rel
WHERE d.kind = 'sequence' AND pgtemplate.sequence_options(d.rel) IS DISTINCT FROM s.options
UNION ALL SELECT 'table', m.rel, (SELECT sum(pg_relation_size(l))::text FROM unnest(t.leaves) l)
FROM marked m LEFT JOIN pgtemplate.tables t ON t.rel = m.rel
UNION ALL SELECT 'sequence', s.rel, NULL FROM pgtemplate.sequences s
WHERE CASE WHEN {every_sequence}
      THEN pg_sequence_last_value(s.rel) IS DISTINCT FROM s.seen ELSE false END
UNION ALL SELECT DISTINCT 'sequence', s.rel, NULL::text
FROM marked m JOIN pgtemplate.tables t ON t.rel = m.rel
JOIN pgtemplate.sequences s ON s.rel = ANY (t.sequences)
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
  AND d.datname NOT LIKE 'pgtemplate\_%'
"""
# pg_largeobject (the data) is readable by a superuser only: others see lo_put() on an existing
# large object only through its metadata, which lo_put() leaves alone.
_LARGE_OBJECT_DATA = (
    "OR EXISTS (SELECT FROM pg_largeobject WHERE age(xmin) < age(state.ref::xid8::xid))"
)


def _render(superuser: bool, every_sequence: str, marked_sequences: str, databases: str) -> str:
    return (
        _CHECK.replace("{large_object_data}", _LARGE_OBJECT_DATA if superuser else "")
        .replace("{every_sequence}", every_sequence)
        .replace("{marked_sequences}", marked_sequences)
        .replace("{databases}", databases)
    )


@functools.cache
def check_query(superuser: bool, *, all_sequences: bool, databases: bool) -> str:
    every = "true" if all_sequences else "false"
    return _render(superuser, every, "NOT " + every, "true" if databases else "false")


CALL_CHECK = "CALL pgtemplate.check($1, $2, $3)"
"""Returns one row: ``kinds``, ``rels``, ``details`` (the query's rows as arrays), ``upto`` (the
WAL read up to: the next check's start) and ``wal`` (false: every sequence was compared)."""


def create_wal_marks(walinspect_schema: str) -> str:
    """The procedure behind ``CALL_CHECK``: a flush, then the check, in one round trip.

    A procedure, because only a COMMIT flushes the WAL (pg_walinspect reads flushed WAL only),
    and the rolled-back transaction of a failed INSERT never flushes its own nextval(). A
    transaction that holds an xid and wrote WAL waits for the flush at commit when
    ``synchronous_commit`` is ``local`` (not ``on``, which would also wait for a synchronous
    standby), whatever the session's setting. The sequences compared: those
    the WAL names, those of marked tables (TRUNCATE ... RESTART IDENTITY gives a sequence a new
    file, which ``wal_level = minimal`` does not log), and the unlogged ones (never logged).
    """
    check = _render(
        True,
        "(v_moved IS NULL OR s.rel = ANY (v_moved) OR NOT s.logged)",
        "v_moved IS NOT NULL",
        "p_databases",
    )
    return rf"""
CREATE SEQUENCE pgtemplate.flush;
CREATE PROCEDURE pgtemplate.check(
  p_from pg_lsn, p_budget bigint, p_databases boolean,
  INOUT kinds text[] DEFAULT NULL, INOUT rels oid[] DEFAULT NULL,
  INOUT details text[] DEFAULT NULL, INOUT upto pg_lsn DEFAULT NULL,
  INOUT wal boolean DEFAULT NULL)
LANGUAGE plpgsql AS $check$
DECLARE
  v_moved oid[];
  v_db oid;
  v_space oid;
  v_seq oid;
  v_last bigint;
  v_now bigint;
BEGIN
  PERFORM set_config('synchronous_commit', 'local', true);
  PERFORM pg_current_xact_id(), setval('pgtemplate.flush', 1);
  COMMIT;
  upto := pg_current_wal_flush_lsn();
  IF p_from IS NOT NULL AND upto > p_from AND upto - p_from <= p_budget THEN
    SELECT d.oid, d.dattablespace INTO v_db, v_space
    FROM pg_database d WHERE d.datname = current_database();
    BEGIN
      v_moved := ARRAY(
        SELECT DISTINCT r.oid FROM (
          SELECT pg_filenode_relation(
                   CASE WHEN m[1]::oid = v_space THEN 0 ELSE m[1]::oid END, m[2]::oid)::oid AS oid
          FROM (SELECT regexp_match(w.description, '^rel (\d+)/' || v_db || '/(\d+)') AS m
                FROM {walinspect_schema}.pg_get_wal_records_info(p_from, upto) w
                WHERE w.resource_manager = 'Sequence') f
          WHERE m IS NOT NULL) r
        WHERE r.oid IS NOT NULL);
    EXCEPTION WHEN OTHERS THEN  -- the WAL is gone (a checkpoint recycled it): compare them all
      v_moved := NULL;
    END;
  END IF;
  wal := v_moved IS NOT NULL;
  SELECT array_agg(c.kind), array_agg(c.rel), array_agg(c.detail) INTO kinds, rels, details
  FROM ({check}) c;
  -- pg_sequence_last_value() is NULL while is_called is false, whatever the value: a setval(s,
  -- v, false) on a sequence never called in the template looks like no move. Those the WAL
  -- names (rarely any) are read themselves.
  FOR v_seq, v_last IN
    SELECT s.rel, s.last_value FROM pgtemplate.sequences s
    WHERE s.rel = ANY (v_moved) AND s.seen IS NULL AND pg_sequence_last_value(s.rel) IS NULL
  LOOP
    EXECUTE format('SELECT last_value FROM %s', v_seq::regclass) INTO v_now;
    IF v_now IS DISTINCT FROM v_last THEN
      kinds := kinds || 'sequence'::text;
      rels := rels || v_seq;
      details := details || NULL::text;
    END IF;
  END LOOP;
END $check$;
"""
