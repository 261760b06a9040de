"""A slow template build never freezes the event loop of the async fixture that asked for it."""

from __future__ import annotations

import uuid

from conftest import InnerProject

SLOW_BUILD = '''
"""Builds the template slowly. {marker}"""
import asyncio

import asyncpg


async def build(url: str) -> None:
    await asyncio.sleep(2)
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    await conn.execute("CREATE TABLE item (id int)")
    await conn.close()
'''

CONFTEST = """
import asyncio
import time

import pytest_asyncio
from pytest_pgtemplate import async_worker_database


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def app(request):
    beats = []

    async def heartbeat():  # what a server or a health check on this loop needs: turns
        while True:
            beats.append(time.monotonic())
            await asyncio.sleep(0.02)

    task = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.1)
    started = time.monotonic()
    database = await async_worker_database(request)
    waited = time.monotonic() - started
    await asyncio.sleep(0.1)
    task.cancel()
    during = [b for b in beats if b >= started - 0.05]
    longest_stall = max(later - earlier for earlier, later in zip(during, during[1:]))
    yield database, waited, longest_stall
"""

TESTS = """
import pytest


@pytest.mark.asyncio(loop_scope="session")
async def test_the_loop_kept_turning_during_the_build(app, pg_worker_database):
    database, waited, longest_stall = app
    assert database is pg_worker_database
    assert waited >= 2, "the build (2 s) ran while the fixture awaited it"
    assert longest_stall < 0.5, f"the loop stalled {longest_stall:.2f} s"
"""


def test_async_worker_database_keeps_the_loop_serving_during_a_slow_build(
    project: InnerProject,
) -> None:
    (project.path / "slow_build.py").write_text(SLOW_BUILD.format(marker=uuid.uuid4().hex))
    (project.path / "conftest.py").write_text(CONFTEST)
    project.write_tests(TESTS)
    project.add_ini(
        pgtemplate_migrate="slow_build:build",
        pgtemplate_fingerprint_paths="slow_build.py",
    )
    project.run("-p", "no:xdist").assert_outcomes(passed=1)
