"""Session-level classic (the widely copied blog recipe): one database per test session.

The session creates and migrates one database; each test gets a new engine and session, and
afterwards every table is emptied with one ``TRUNCATE ... CASCADE`` and the engine disposed.
Under xdist every worker runs the same session fixture against the same database name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from ._common import admin_execute, database_url, migrate, prefix

_TABLES = """
SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') FROM pg_tables
WHERE schemaname = 'public' AND tablename <> 'alembic_version'
"""


@pytest.fixture(scope="session")
async def classic_database() -> AsyncIterator[str]:
    name = f"{prefix()}_classic"
    await admin_execute(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    url = database_url(name)
    await migrate(url)
    yield url
    await admin_execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
async def classic_tables(classic_database: str) -> str:
    """Every table but alembic's, read once: models rarely cover a whole real schema."""
    engine = create_async_engine(classic_database)
    async with engine.connect() as conn:
        tables = str(await conn.scalar(text(_TABLES)))
    await engine.dispose()
    return tables


@pytest.fixture
async def db(classic_database: str, classic_tables: str) -> AsyncIterator[AsyncSession]:
    engine = create_async_engine(classic_database)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        yield session
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {classic_tables} CASCADE"))
    await engine.dispose()
