"""Per-worker migrate + DELETE-all: the conftest large suites run today, before a template.

Each xdist worker creates its own database (``..._test_gw0``), runs ``alembic upgrade head``
on it once per session (the suite's data migration seeds it), and keeps one pooled engine.
After every test one transaction runs ``DELETE FROM`` every table, children first, then
re-inserts the seed rows (``bench_seed.SEED``, the suite's copy of them). The table order is
read once from the catalog: the suite's models map only three of its tables.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from graphlib import TopologicalSorter
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from ._common import admin_execute, database_url, migrate, prefix, worker_id

_FOREIGN_KEYS = """
SELECT c.relname AS child, p.relname AS parent
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
LEFT JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'f'
LEFT JOIN pg_class p ON p.oid = k.confrelid
WHERE c.relkind = 'r' AND c.relname <> 'alembic_version'
"""


@pytest.fixture(scope="session")
async def worker_engine() -> AsyncIterator[AsyncEngine]:
    name = f"{prefix()}_test_{worker_id()}"
    await admin_execute(
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
    )
    try:
        await migrate(database_url(name))
        engine = create_async_engine(database_url(name))
        yield engine
        await engine.dispose()
    finally:
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def delete_order(worker_engine: AsyncEngine) -> list[str]:
    """Every table, children before parents: the order DELETE must follow."""
    async with worker_engine.connect() as conn:
        rows = (await conn.execute(text(_FOREIGN_KEYS))).all()
    graph: dict[str, set[str]] = {}
    for child, parent in rows:
        graph.setdefault(child, set())
        if parent is not None and parent != child:
            graph.setdefault(parent, set()).add(child)
    return list(TopologicalSorter(graph).static_order())


@pytest.fixture
async def db(worker_engine: AsyncEngine, delete_order: list[str]) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(worker_engine, expire_on_commit=False) as session:
        yield session
    async with worker_engine.begin() as conn:
        for table in delete_order:
            await conn.execute(text(f'DELETE FROM "{table}"'))
        await _insert_seed(conn)


async def _insert_seed(conn: AsyncConnection) -> None:
    seed: dict[str, list[dict[str, Any]]] = importlib.import_module("bench_seed").SEED
    for table, rows in seed.items():
        columns = list(rows[-1])
        names = ", ".join(columns)
        values = ", ".join(f":{column}" for column in columns)
        await conn.execute(text(f"INSERT INTO {table} ({names}) VALUES ({values})"), rows)
