"""Fixtures for synchronous code: a SQLAlchemy ``Engine`` and ``Session`` on psycopg 3.

Many suites are sync, or mix sync and async code; these share the worker database and its reset
with the async fixtures. A sync engine never touches an event loop, so one pooled engine serves
the whole worker; it drops its pool when the database is replaced (``generation``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from .worker import WorkerDatabase


@pytest.fixture(scope="session")
def _pgtemplate_sync_engine(pg_worker_database: WorkerDatabase) -> Iterator[list[object]]:
    """[engine, generation]: created on first use, disposed at the end of the run."""
    if importlib.util.find_spec("psycopg") is None:
        pytest.fail(
            "pytest-pgtemplate: pg_sync_engine and pg_sync_session need psycopg 3: "
            "pip install 'pytest-pgtemplate[psycopg]'",
            pytrace=False,
        )
    engine = create_engine(pg_worker_database.sync_url, pool_size=2, max_overflow=8)
    holder: list[object] = [engine, pg_worker_database.generation]
    yield holder
    engine.dispose()


@pytest.fixture
def pg_sync_engine(_pgtemplate_sync_engine: list[object], pg_database: WorkerDatabase) -> Engine:
    """A SQLAlchemy ``Engine`` (``postgresql+psycopg://``) on the worker database."""
    engine, generation = _pgtemplate_sync_engine
    assert isinstance(engine, Engine)
    if generation != pg_database.generation:  # re-cloned: pooled connections point at nothing
        engine.dispose()
        _pgtemplate_sync_engine[1] = pg_database.generation
    return engine


@pytest.fixture
def pg_sync_session(request: pytest.FixtureRequest, pg_sync_engine: Engine) -> Iterator[Session]:
    """A ``Session`` (``expire_on_commit=False``) on ``pg_sync_engine``, closed after the test.

    Under ``reset="rollback"`` it joins an outer transaction through savepoints, so the test's
    ``commit()`` works and the outer rollback undoes everything.
    """
    from .fixtures import reset_strategy

    if reset_strategy(request) != "rollback":
        with Session(pg_sync_engine, expire_on_commit=False) as session:
            yield session
        return
    with pg_sync_engine.connect() as connection:
        transaction = connection.begin()
        session = Session(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()
