"""The floor: one database migrated before the run, one pooled engine, no reset at all.

Shared by every worker and round: the tests only look at rows they inserted themselves.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from ._common import database_url


@pytest.fixture(scope="session")
async def floor_engine() -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url(os.environ["BENCH_FLOOR_DB"]))
    yield engine
    await engine.dispose()


@pytest.fixture
async def db(floor_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(floor_engine, expire_on_commit=False) as session:
        yield session
