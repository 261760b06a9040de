"""What real suites need when they adopt the plugin: settings, databases, engines of their own."""

from __future__ import annotations

import pytest

from conftest import InnerProject

SHOW_DURABILITY = """
from sqlalchemy import text

DATABASE_SETTINGS = (
    "SELECT coalesce(array_to_string(setconfig, ' '), '') FROM pg_db_role_setting s"
    " JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()"
)

async def test_durability(pg_session):
    shown = await pg_session.scalar(text("SHOW synchronous_commit"))
    configured = await pg_session.scalar(text(DATABASE_SETTINGS)) or ""
    with open("synchronous_commit.txt", "w") as out:
        out.write(f"{shown}|{configured}")
"""


def test_worker_databases_commit_without_waiting_for_the_disk(project: InnerProject) -> None:
    project.write_tests(SHOW_DURABILITY)
    project.run("-p", "no:xdist").assert_outcomes(passed=1)
    shown = (project.path / "synchronous_commit.txt").read_text()
    assert shown == "off|synchronous_commit=off", "set on the database, seen by the test"


WRAPPING_CONFTEST = """
import pytest

CALLS = []


@pytest.fixture(scope="session")
def pg_server(pg_server):
    CALLS.append("server")
    return pg_server


@pytest.fixture(scope="session")
def pg_template(pg_template):
    CALLS.append("template")
    return pg_template


@pytest.fixture(scope="session")
def pg_worker_database(pg_worker_database):
    CALLS.append("worker database")
    return pg_worker_database


@pytest.fixture
def pg_database(pg_database):
    CALLS.append("database")
    return pg_database


@pytest.fixture
def pg_engine(pg_engine):
    CALLS.append("engine")
    return pg_engine


@pytest.fixture
def pg_session(pg_session):
    CALLS.append("session")
    return pg_session
"""

WRAPPED_TESTS = """
import pytest
from sqlalchemy import text

import conftest


@pytest.mark.parametrize("n", range(3))
async def test_each_link_is_the_conftests(pg_session, n):
    assert await pg_session.scalar(text("SELECT count(*) FROM customer")) == 0
    await pg_session.execute(text("INSERT INTO customer (email) VALUES ('a@b.c')"))
    await pg_session.commit()


def test_zz_calls():
    assert conftest.CALLS[:6] == [
        "server", "template", "worker database", "database", "engine", "session"
    ]
    assert conftest.CALLS.count("database") == 3
"""


def test_every_link_of_the_chain_can_be_wrapped_in_a_conftest(project: InnerProject) -> None:
    (project.path / "conftest.py").write_text(WRAPPING_CONFTEST)
    project.write_tests(WRAPPED_TESTS)
    project.run("-p", "no:xdist").assert_outcomes(passed=4)


OWN_SERVER_OBJECT = """
import os

import pytest
from pytest_pgtemplate import Server


@pytest.fixture(scope="session")
def pg_server():
    # the project's own server (say, a container it started), made with the public constructor
    return Server.connect(os.environ["PROJECT_SERVER"])
"""

OWN_SERVER_TESTS = """
import os

import pytest
from sqlalchemy import text


@pytest.mark.parametrize("n", range(5))
async def test_the_chain_works_on_the_projects_server(pg_session, pg_worker_database, n):
    assert os.environ["DATABASE_URL"] == pg_worker_database.url, "exported for the server in use"
    assert await pg_session.scalar(text("SELECT count(*) FROM customer")) == 0
    await pg_session.execute(text("INSERT INTO customer (email) VALUES ('a@b.c')"))
    await pg_session.commit()
"""

KILLED_WORKER = """
import os, signal


def test_the_worker_dies_holding_its_database(pg_database):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_server_object_made_by_the_project_serves_the_chain_and_the_crash_sweep(
    project: InnerProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The configured URL names no server: everything must follow the conftest's object.
    project.add_ini(
        pgtemplate_url="postgresql://postgres@127.0.0.1:1/postgres",
        pgtemplate_export_env="DATABASE_URL",
    )
    monkeypatch.setenv("PROJECT_SERVER", project.server_url)
    (project.path / "conftest.py").write_text(OWN_SERVER_OBJECT)
    project.write_tests(OWN_SERVER_TESTS, name="test_work")
    project.write_tests(KILLED_WORKER, name="test_killed")
    # One file per worker and no replacement for the killed one: only the controller's sweep
    # can drop the database it held.
    result = project.run("-n", "2", "--dist", "loadfile", "--max-worker-restart", "0")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running*test_killed*"])
    assert project.databases("template"), "the template was built on the project's server"
    assert not project.databases("worker"), "the controller swept the project's server"


MIGRATION_TESTS = """
import asyncio

import asyncpg
from alembic import command
from alembic.config import Config


def tables(url):
    async def names():
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row[0] for row in rows}
        finally:
            await conn.close()
    return asyncio.run(names())


def test_migrations_upgrade_downgrade_upgrade(pg_empty_database):
    assert tables(pg_empty_database.libpq_url) == set()
    config = Config("alembic.ini")
    config.set_main_option("sqlalchemy.url", pg_empty_database.url)
    command.upgrade(config, "head")
    assert {"product", "category", "alembic_version"} <= tables(pg_empty_database.libpq_url)
    command.downgrade(config, "base")
    assert tables(pg_empty_database.libpq_url) == {"alembic_version"}
    command.upgrade(config, "head")
    with open("empty.txt", "w") as out:
        out.write(pg_empty_database.name)


def test_zz_it_was_dropped(pg_server):
    name = open("empty.txt").read()
    async def exists():
        conn = await asyncpg.connect(pg_server.url)
        try:
            return await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1", name)
        finally:
            await conn.close()
    assert name.endswith("_empty1")
    assert not asyncio.run(exists())
"""


def test_an_empty_database_for_migration_tests(project: InnerProject) -> None:
    project.write_tests(MIGRATION_TESTS)
    result = project.run("-p", "no:xdist")
    result.assert_outcomes(passed=2)
    assert project.migrations_run() == 2, "the test migrated; no template was needed"


PROJECT_ENGINE = """
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ENGINE = {}


@pytest.fixture(scope="session")
def app_engine(pg_worker_database):
    # what a project's own fixture does: one pooled engine for the whole run
    engine = create_async_engine(pg_worker_database.url, **pg_worker_database.engine_options())
    yield engine
    engine.sync_engine.dispose(close=False)


@pytest.mark.parametrize("n", range(3))
@pytest.mark.pgtemplate(reset="recreate")
@pytest.mark.asyncio(loop_scope="session")
async def test_the_projects_engine_survives_recreate(app_engine, pg_database, n):
    async with app_engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM customer")) == 0
        await conn.execute(text("INSERT INTO customer (email) VALUES ('a@b.c')"))
        await conn.commit()
"""


def test_an_engine_the_project_builds_keeps_working_across_recreate(
    project: InnerProject,
) -> None:
    project.write_tests(PROJECT_ENGINE)
    project.run("-p", "no:xdist").assert_outcomes(passed=3)
    project.write_tests(PROJECT_ENGINE.replace("**pg_worker_database.engine_options()", ""))
    result = project.run("-p", "no:xdist")
    result.assert_outcomes(passed=2, failed=1)  # without it: a connection to a dropped database


def test_the_run_id_is_xdists_testrun_uid(project: InnerProject) -> None:
    project.write_tests(
        """
        def test_names(pg_worker_database, testrun_uid):
            with open(f"names-{pg_worker_database.name}.txt", "w") as out:
                out.write(testrun_uid)
        """
    )
    project.run("-n", "2").assert_outcomes(passed=1)
    [written] = project.path.glob("names-*.txt")
    assert written.name.startswith(f"names-pgtemplate_{written.read_text()[:12]}_gw")
    for path in project.path.glob("names-*.txt"):
        path.unlink()
    shared = "--testrunuid=" + "ab" * 16  # what CI shards pass to correlate their reports
    for _ in range(2):
        project.run("-n", "2", shared).assert_outcomes(passed=1)
    names = sorted(path.name for path in project.path.glob("names-*.txt"))
    assert len(names) == 2, "a uid shared by shards is not the run id: each run has its own"
