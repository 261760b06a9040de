"""Issue 12's promises: a template follows the migrations it was built from; every test that asks
for the database starts clean, whatever ran before it."""

from __future__ import annotations

from conftest import InnerProject

BUILD_WITH_ALEMBIC = '''
"""The project's own "create the database" code, which runs alembic inside."""
from alembic import command
from alembic.config import Config


def build(url: str) -> None:
    config = Config("alembic.ini")
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head")
'''

RECORD_TEMPLATE = """
def test_template(pg_template, pg_database):
    with open("templates.txt", "a") as out:
        out.write(f"{pg_template.name} {pg_template.reused}\\n")
"""


def test_a_callable_that_runs_alembic_rebuilds_when_a_migration_changes_not_a_test(
    project: InnerProject,
) -> None:
    (project.path / "build_db.py").write_text(BUILD_WITH_ALEMBIC)
    project.add_ini(
        pgtemplate_migrate="build_db:build",
        pgtemplate_fingerprint_paths="build_db.py",
    )
    project.write_tests(RECORD_TEMPLATE)
    project.run("-p", "no:xdist").assert_outcomes(passed=1)
    project.write_tests(RECORD_TEMPLATE + "\n# a test changed\n")
    project.run("-p", "no:xdist").assert_outcomes(passed=1)
    assert project.migrations_run() == 1, "editing a test never rebuilds"
    migration = project.path / "migrations/versions/0004_log.py"
    migration.write_text(migration.read_text() + "\n# a migration changed\n")
    project.run("-p", "no:xdist").assert_outcomes(passed=1)
    assert project.migrations_run() == 2, "editing a migration always rebuilds"
    runs = [line.split() for line in (project.path / "templates.txt").read_text().splitlines()]
    assert [reused for _, reused in runs] == ["False", "True", "False"]


WRITES_OUTSIDE = """
import os

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


def test_0_the_database_exists(pg_database):
    pass


async def test_1_the_app_writes_without_asking_for_the_database():
    engine = create_async_engine(os.environ["DATABASE_URL"])
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO customer (email) VALUES ('app@b.c')"))
        await conn.execute(text("DELETE FROM category"))
    await engine.dispose()


async def test_2_the_next_test_that_asks_starts_clean(pg_session):
    assert await pg_session.scalar(text("SELECT count(*) FROM customer")) == 0
    assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
"""


def test_a_test_that_asks_for_the_database_starts_clean_after_writes_elsewhere(
    project: InnerProject,
) -> None:
    project.add_ini(pgtemplate_export_env="DATABASE_URL")
    project.write_tests(WRITES_OUTSIDE)
    project.run("-p", "no:xdist").assert_outcomes(passed=3)
