"""The application's own session handling, as many projects write it.

It reads DATABASE_URL, which pytest-pgtemplate points at the worker's database
(``pgtemplate_export_env = DATABASE_URL``), or takes the URL explicitly.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


class DBSessionManager:
    def __init__(self, url: str | None = None) -> None:
        self.engine: AsyncEngine = create_async_engine(url or os.environ["DATABASE_URL"])
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def close(self) -> None:
        await self.engine.dispose()
