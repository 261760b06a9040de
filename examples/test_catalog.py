"""The example suite: run it with ``pytest examples -n auto``."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from pytest_pgtemplate import WorkerDatabase
from shop.catalog import add_product, add_review, average_rating
from shop.db import DBSessionManager
from shop.models import Base, Category, Customer, Product


async def test_seed_rows_from_the_data_migration_are_there(pg_session: AsyncSession) -> None:
    codes = await pg_session.scalars(select(Category.code).order_by(Category.code))
    assert list(codes) == ["books", "garden", "toys"]


async def test_average_rating(pg_session: AsyncSession) -> None:
    product = await add_product(pg_session, "Dune", "books")
    await add_review(pg_session, product, "Great", "5.0")
    await add_review(pg_session, product, "Long", "3.0")
    await pg_session.commit()
    assert await average_rating(pg_session, product) == Decimal("4.0")


@pytest.mark.parametrize("attempt", range(3))
async def test_each_test_starts_from_the_template(pg_session: AsyncSession, attempt: int) -> None:
    assert await pg_session.scalar(select(func.count()).select_from(Product)) == 0
    pg_session.add(Customer(email="same@example.com"))  # unique: collides if not reset
    pg_session.add(Product(name=f"attempt {attempt}"))
    await pg_session.commit()


async def test_the_applications_own_session_manager(db_manager: DBSessionManager) -> None:
    async with db_manager.session() as session:
        await add_product(session, "Rake", "garden")
    async with db_manager.session() as session:
        assert await session.scalar(select(func.count()).select_from(Product)) == 1


async def test_database_url_is_exported_for_app_settings(pg_database: WorkerDatabase) -> None:
    assert os.environ["DATABASE_URL"] == pg_database.url
    manager = DBSessionManager()  # reads DATABASE_URL, as the application does
    async with manager.session() as session:
        assert await session.scalar(text("SELECT current_database()")) == pg_database.name
    await manager.close()


async def test_raw_engine(pg_engine: AsyncEngine) -> None:
    async with pg_engine.begin() as conn:
        await conn.execute(text("INSERT INTO customer (email) VALUES ('raw@example.com')"))
    async with pg_engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM customer")) == 1


@pytest.mark.pgtemplate
def test_marker_gives_a_sync_test_the_database(pg_worker_database: WorkerDatabase) -> None:
    assert pg_worker_database.name.startswith("pgtemplate_")


async def test_the_models_match_the_migrated_database(pg_engine: AsyncEngine) -> None:
    """pytest-alembic's model check: autogenerate finds nothing to add or drop, although the
    plugin's change tracking is installed in the database (in a schema of its own)."""

    def differences(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))

    async with pg_engine.connect() as conn:
        assert await conn.run_sync(differences) == []
