"""Installed but unused, the plugin costs a suite nothing: no SQLAlchemy, asyncpg, psycopg or
alembic is loaded, no server is started, nothing is printed about a schema nobody configured."""

from __future__ import annotations

from conftest import InnerProject

NO_DATABASE = """
import sys

def test_nothing():
    pass

def test_zz_the_engine_room_stayed_unloaded():
    heavy = ["sqlalchemy", "asyncpg", "alembic", "psycopg", "filelock"]
    assert [name for name in heavy if name in sys.modules] == []
"""


def test_a_suite_without_database_tests_loads_nothing(project: InnerProject) -> None:
    project.write_ini()  # no server named: the own server, which must not start
    (project.path / "alembic.ini").unlink()
    project.write_tests(NO_DATABASE)
    result = project.run("-p", "no:xdist", "-p", "no:postgresql")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*pgtemplate: own PostgreSQL*")
    result.stdout.no_fnmatch_line("*schema from alembic*")
    result.stdout.fnmatch_lines(["pgtemplate: * schema not configured (no alembic.ini in *"])
