"""Look inside a freshly built template before it is trusted.

A migration that "succeeded" may have run against another database (an env.py that reads
DATABASE_URL); marking that empty template finished would fail every test of every later run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..naming import quote_ident
from ..urls import libpq
from ._base import Verified, run_coroutine

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# Alembic's version table: ``alembic_version`` by default, any name with ``version_table=``;
# its only column is ``version_num``. Look in every schema (``version_table_schema=``).
_VERSION_TABLES = """
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'version_num'
              AND a.attnum > 0 AND NOT a.attisdropped)
  AND (c.relname = 'alembic_version' OR c.relnatts = 1)
ORDER BY 1, 2
"""
_USER_TABLES = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""


_OBJECTS = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%')
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
     + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd', 'c', 'r', 'm') AND t.typrelid = 0
          AND n.nspname NOT IN ('pg_catalog', 'information_schema'))
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
     + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN
          ('pg_catalog', 'information_schema', 'public') AND nspname NOT LIKE 'pg\\_%')
"""


@dataclass(frozen=True)
class Contents:
    revisions: tuple[str, ...] | None
    version_tables: tuple[str, ...]
    tables: int
    objects: int = 0
    """Anything of the application's, version tables left out."""

    def verified(self) -> Verified:
        return Verified(self.revisions, self.tables)


def inspect_database(url: URL) -> Contents:
    """Version table(s) and their revisions, and the number of other tables (no loop needed)."""
    return run_coroutine(_inspect(url))


async def _inspect(url: URL) -> Contents:
    import asyncpg

    conn = await asyncpg.connect(libpq(url))
    try:
        found = await conn.fetch(_VERSION_TABLES)
        revisions: set[str] = set()
        for row in found:
            table = f"{quote_ident(row['schema'])}.{quote_ident(row['name'])}"
            revisions.update(r[0] for r in await conn.fetch(f"SELECT version_num FROM {table}"))
        tables = int(await conn.fetchval(_USER_TABLES)) - len(found)
        objects = int(await conn.fetchval(_OBJECTS)) - len(found)
    finally:
        await conn.close()
    names = tuple(f"{row['schema']}.{row['name']}" for row in found)
    return Contents(tuple(sorted(revisions)) if found else None, names, tables, objects)
