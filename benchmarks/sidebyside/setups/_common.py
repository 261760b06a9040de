"""What the setups share: where the server and the suite are, database names, alembic."""

from __future__ import annotations

import asyncio
import itertools
import os

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, make_url

_COUNTER = itertools.count()


def admin_url() -> URL:
    """The server's maintenance database, ``postgresql://`` form."""
    return make_url(os.environ["BENCH_ADMIN_URL"])


def database_url(name: str) -> str:
    """``postgresql+asyncpg://`` URL of ``name`` on the benchmark's server."""
    url = admin_url().set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def prefix() -> str:
    """``bench_<run hex>_<workload>``: every database a setup creates starts with it."""
    return os.environ["BENCH_DB_PREFIX"]


def unique_name(kind: str) -> str:
    """A database name no other test, worker or run uses."""
    return f"{prefix()}_{kind}_{worker_id()}_{next(_COUNTER)}"


def alembic_config(url: str) -> Config:
    config = Config(os.environ["BENCH_ALEMBIC_INI"])
    config.set_main_option("sqlalchemy.url", url)
    return config


async def migrate(url: str) -> None:
    """``alembic upgrade head`` in-process, on a thread: env.py calls asyncio.run()."""
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")


async def admin_execute(*statements: str) -> None:
    """CREATE/DROP DATABASE cannot run in a transaction: a plain autocommit connection."""
    url = admin_url()
    conn = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
