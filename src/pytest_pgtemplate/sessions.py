"""Sessions for tests, and the ``rollback`` strategy's outer transaction.

Under ``rollback`` the session joins an outer transaction through savepoints, so the test's
``commit()`` works and the outer rollback undoes everything. A savepoint release checks no
deferred constraint, so each of those commits first runs ``SET CONSTRAINTS ALL IMMEDIATE`` (as
Django's ``TestCase`` checks constraints before its rollback): a commit that would fail in
production fails in the test too. The constraints declared ``INITIALLY DEFERRED`` are deferred
again afterwards, as a new transaction would have them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

_DEFERRABLE = """
SELECT count(*) FILTER (WHERE c.condeferrable) AS deferrable,
       array_agg(quote_ident(n.nspname) || '.' || quote_ident(c.conname))
         FILTER (WHERE c.condeferred) AS deferred
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
"""


def check_deferred_constraints(session: Session) -> None:
    """Before each commit of ``session``: what the real commit would have checked."""
    known: list[Any] = []

    def before_commit(session: Session) -> None:
        connection = session.connection()
        if not known:
            known.append(connection.exec_driver_sql(_DEFERRABLE).one())
        deferrable, deferred = known[0]
        if not deferrable:
            return
        connection.exec_driver_sql("SET CONSTRAINTS ALL IMMEDIATE")
        if deferred:
            connection.exec_driver_sql(f"SET CONSTRAINTS {', '.join(deferred)} DEFERRED")

    event.listen(session, "before_commit", before_commit)


@asynccontextmanager
async def async_rollback_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        check_deferred_constraints(session.sync_session)
        try:
            yield session
        finally:
            await session.close()
            await transaction.rollback()


@contextmanager
def sync_rollback_session(engine: Engine) -> Iterator[Session]:
    with engine.connect() as connection:
        yield from _joined(connection)


def _joined(connection: Connection) -> Iterator[Session]:
    transaction = connection.begin()
    session = Session(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )
    check_deferred_constraints(session)
    try:
        yield session
    finally:
        session.close()
        transaction.rollback()
