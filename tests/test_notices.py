"""What the plugin cannot undo or does not decide, it says: migrations with several heads, a test
that leaves a database on the own server, a server too small for the run's workers."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import InnerProject
from pytest_pgtemplate.server.binaries import find_binaries
from pytest_pgtemplate.server.own import start, stop

BRANCH = """
revision = "{revision}"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    pass
"""


def test_several_heads_are_migrated_but_named(project: InnerProject) -> None:
    for revision in ("0005a", "0005b"):
        path = project.path / f"migrations/versions/{revision}.py"
        path.write_text(BRANCH.format(revision=revision))
    project.write_tests("def test_db(pg_database):\n    pass\n")
    result = project.run("-p", "no:xdist", "-W", "default")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*the migrations have 2 heads (0005a, 0005b)*alembic upgrade head* fails*merge heads*"]
    )


def test_a_database_a_test_leaves_on_the_own_server_is_named(
    project: InnerProject, cache_dir: Path
) -> None:
    project.write_ini(
        pgtemplate_cache_dir=str(cache_dir),
        pgtemplate_project=project.project,
        asyncio_mode="auto",
    )
    project.write_tests(
        """
        import asyncpg

        async def test_creates_a_database(pg_database):
            conn = await asyncpg.connect(pg_database.libpq_url)
            await conn.execute('CREATE DATABASE "scratch_left_behind"')
            await conn.close()

        def test_next(pg_database):
            pass
        """
    )
    result = project.run("-p", "no:xdist", "-W", "default")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*database(s) scratch_left_behind appeared on the plugin's own server while "
         "test_inner.py::test_creates_a_database ran*drop them*"]
    )  # fmt: skip
    result.stdout.no_fnmatch_line("*scratch_left_behind appeared*while test_inner.py::test_next*")


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[str]:
    """A server of the plugin's kind with max_connections = 8 (ALTER SYSTEM outlasts the
    plugin's own settings file, and a warm start keeps the cluster)."""
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path("/tmp")
    cache = base / f"pgtemplate-test-{uuid.uuid4().hex[:8]}"
    try:
        server = start(find_binaries(None), cache=cache, owner_pid=os.getpid())
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_connections = 8")
        stop(server)
        server = start(find_binaries(None), cache=cache, owner_pid=os.getpid())
        try:
            yield server.url
        finally:
            stop(server)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def test_more_workers_than_the_server_has_connections_for_is_one_warning(
    project: InnerProject, small_server: str
) -> None:
    project.write_ini(pgtemplate_url=small_server, pgtemplate_project=project.project)
    project.write_tests("".join(f"def test_{i}(pg_database):\n    pass\n" for i in range(8)))
    result = project.run("-n", "4", "-W", "default")
    result.stdout.fnmatch_lines(
        ["*4 worker(s) need about 12 connections*allows 8*Run fewer workers (-n 2)*"]
    )
    assert result.stdout.str().count("worker(s) need about") == 1, "once per run"
