"""pytest-postgresql 10 as its README recommends for an existing server.

``postgresql_noproc(load=[...])`` migrates a template database once per session (per xdist
worker: the name gets the worker id), and the ``postgresql`` client fixture clones it for every
test and drops it after. The SQLAlchemy session follows the README's example (a ``NullPool``
engine on the client's database), made async.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from psycopg import Connection
from pytest_postgresql import factories
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from ._common import admin_url, alembic_config, database_url, prefix


def load_migrations(dbname: str, **_: Any) -> None:
    """A ``load`` callable: called with host, port, user, dbname and password."""
    command.upgrade(alembic_config(database_url(dbname)), "head")


_ADMIN = admin_url()
bench_noproc = factories.postgresql_noproc(
    host=_ADMIN.host,
    port=_ADMIN.port,
    user=_ADMIN.username,
    dbname=f"{prefix()}_ppg",
    load=[load_migrations],
)
bench_postgresql = factories.postgresql("bench_noproc")


@pytest.fixture
async def db(bench_postgresql: Connection[Any]) -> AsyncIterator[AsyncSession]:
    engine = create_async_engine(database_url(bench_postgresql.info.dbname), poolclass=NullPool)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        yield session
    await engine.dispose()
