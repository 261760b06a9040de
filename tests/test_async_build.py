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
    turns = len([b for b in beats if started <= b <= started + waited])
    yield database, waited, turns
"""

TESTS = """
import pytest


@pytest.mark.asyncio(loop_scope="session")
async def test_the_loop_kept_turning_during_the_build(app, pg_worker_database):
    database, waited, turns = app
    assert database is pg_worker_database
    assert waited >= 2, "the build (2 s) ran while the fixture awaited it"
    # A frozen loop turns 0 times during the build; a free one every 20 ms (100 times), and
    # even a very busy machine turns it more than 10 times in those 2 s.
    assert turns >= 10, f"the loop turned {turns} times while the template was built"
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
