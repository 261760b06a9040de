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

One query (``check_query``) answers what changed, in one round trip; the restore itself is
planned by the client.
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
  rel oid PRIMARY KEY, seen bigint, options text NOT NULL);
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
# {all}: compare every sequence (after a test), else those of marked tables; {databases}: report
# databases that appeared on the server. One plain query, prepared once per connection: no
# function call (each costs a plan) on the path where nothing changed. The two switches are
# literals, not parameters: a statement with parameters gets a custom plan at every execution
# when the planner prices the generic one higher, as it did here (about 1 ms of planning per
# check: benchmarks/check_cost.py); one without any is planned once, its dead branches folded
# away.
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
WHERE {all} AND pg_sequence_last_value(s.rel) IS DISTINCT FROM s.seen
UNION ALL SELECT DISTINCT 'sequence', s.rel, NULL::text
FROM marked m JOIN pgtemplate.tables t ON t.rel = m.rel
JOIN pgtemplate.sequences s ON s.rel = ANY (t.sequences)
WHERE NOT {all} AND pg_sequence_last_value(s.rel) IS DISTINCT FROM s.seen
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


@functools.cache
def check_query(superuser: bool, *, all_sequences: bool, databases: bool) -> str:
    return (
        _CHECK.replace("{large_object_data}", _LARGE_OBJECT_DATA if superuser else "")
        .replace("{all}", "true" if all_sequences else "false")
        .replace("{databases}", "true" if databases else "false")
    )
