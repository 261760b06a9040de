"""Function-level isolation, the beginner recipe: a new database per test, migrated by alembic.

``CREATE DATABASE``, then ``alembic upgrade head`` in-process (``command.upgrade`` on a thread,
because the async env.py calls ``asyncio.run()``; a subprocess ``alembic upgrade head`` is
the other common form and costs ~0.6 s more per test), a fresh engine, and ``DROP DATABASE``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from ._common import admin_execute, database_url, migrate, unique_name


@pytest.fixture
async def db() -> AsyncIterator[AsyncSession]:
    name = unique_name("fn")
    await admin_execute(f'CREATE DATABASE "{name}"')
    try:
        url = database_url(name)
        await migrate(url)
        engine = create_async_engine(url)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                yield session
        finally:
            await engine.dispose()
    finally:
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
