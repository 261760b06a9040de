"""Synchronous suites: a psycopg Engine and Session with the same reset as the async ones."""

from __future__ import annotations

import pytest

from conftest import InnerProject

SYNC_SUITE = """
import pytest
from sqlalchemy import text


@pytest.mark.parametrize("n", range(4))
def test_sync_writes_are_undone(pg_sync_session, n):
    assert pg_sync_session.scalar(text("SELECT count(*) FROM customer")) == 0
    assert pg_sync_session.scalar(text("SELECT count(*) FROM category")) == 3
    pg_sync_session.execute(text("INSERT INTO customer (email) VALUES ('a@b.c')"))
    pg_sync_session.execute(text("DELETE FROM category"))
    pg_sync_session.commit()
    assert pg_sync_session.scalar(text("SELECT count(*) FROM customer")) == 1


@pytest.mark.parametrize("n", range(2))
async def test_mixed_sync_and_async_see_one_database(pg_session, pg_sync_session, n):
    assert pg_sync_session.scalar(text("SELECT count(*) FROM customer")) == 0
    assert await pg_session.scalar(text("SELECT count(*) FROM customer")) == 0
    pg_sync_session.execute(text("INSERT INTO customer (email) VALUES ('sync@b.c')"))
    pg_sync_session.commit()
    await pg_session.execute(text("INSERT INTO customer (email) VALUES ('async@b.c')"))
    await pg_session.commit()
    sync_db = pg_sync_session.scalar(text("SELECT current_database()"))
    assert sync_db == await pg_session.scalar(text("SELECT current_database()"))
"""


@pytest.mark.parametrize("reset", ["restore", "rollback"])
def test_sync_fixtures_are_reset_exactly(project: InnerProject, reset: str) -> None:
    project.add_ini(pgtemplate_reset=reset)
    project.write_tests(SYNC_SUITE)
    project.run("-n", "2").assert_outcomes(passed=6)


def test_without_psycopg_a_sync_fixture_names_the_extra(project: InnerProject) -> None:
    (project.path / "conftest.py").write_text(
        "import sys\n\nsys.modules['psycopg'] = None  # as if psycopg were not installed\n"
    )
    project.write_tests("def test_sync(pg_sync_session):\n    pass\n")
    result = project.run("-p", "no:xdist")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*need psycopg 3: pip install 'pytest-pgtemplate[[]psycopg]'*"])
