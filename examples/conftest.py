"""Fixtures a project writes on top of pytest-pgtemplate's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pytest_pgtemplate import WorkerDatabase
from shop.db import DBSessionManager


@pytest.fixture
async def db_manager(pg_database: WorkerDatabase) -> AsyncIterator[DBSessionManager]:
    """The application's own session manager, pointed at this worker's clean database."""
    manager = DBSessionManager(pg_database.url)
    yield manager
    await manager.close()
