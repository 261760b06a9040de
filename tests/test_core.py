"""The core promise: one migration per template, one database per worker, reset between tests."""

from __future__ import annotations

import re
import textwrap
import uuid

import pytest
from sqlalchemy.engine import make_url

from conftest import InnerProject
from pytest_pgtemplate.urls import redacted

RECORD_DATABASES = """
    import pytest
    from sqlalchemy import text

    @pytest.mark.parametrize("n", range(6))
    async def test_records_where_it_ran(pg_session, pg_worker_database, pg_template, n):
        current = await pg_session.scalar(text("SELECT current_database()"))
        assert current == pg_worker_database.name
        with open("databases.txt", "a") as out:
            out.write(f"{current}\\n")
"""


def test_migrations_run_once_and_each_worker_has_its_own_database(project: InnerProject) -> None:
    project.write_tests(RECORD_DATABASES)
    result = project.run("-n", "2")
    result.assert_outcomes(passed=6)
    assert project.migrations_run() == 1
    used = set((project.path / "databases.txt").read_text().split())
    assert len(used) == 2
    assert all(re.fullmatch(r"pgtemplate_[0-9a-f]{12}_gw[01]", name) for name in used)
    assert not used & project.databases(), "worker databases must be dropped"


def test_without_xdist_the_worker_is_main(project: InnerProject) -> None:
    project.write_tests(RECORD_DATABASES)
    project.run("-p", "no:xdist").assert_outcomes(passed=6)
    used = set((project.path / "databases.txt").read_text().split())
    assert len(used) == 1
    assert used.pop().endswith("_main")


def test_data_written_by_one_test_is_gone_in_the_next(project: InnerProject) -> None:
    project.write_tests(
        """
        import pytest
        from sqlalchemy import text

        @pytest.mark.parametrize("n", range(4))
        async def test_starts_empty_and_writes(pg_session, n):
            count = await pg_session.scalar(text("SELECT count(*) FROM customer"))
            assert count == 0
            await pg_session.execute(text("INSERT INTO customer (email) VALUES ('a@b.c')"))
            await pg_session.commit()
        """
    )
    project.run("-n", "2").assert_outcomes(passed=4)
    project.run("-p", "no:xdist").assert_outcomes(passed=4)


def test_template_is_reused_then_rebuilt_when_a_migration_changes(project: InnerProject) -> None:
    project.write_tests(
        """
        def test_template(pg_template):
            with open("templates.txt", "a") as out:
                out.write(f"{pg_template.name} {pg_template.reused}\\n")
        """
    )
    project.run("-n", "2").stdout.fnmatch_lines(["*template pgtemplate_tpl_* built by gw*"])
    project.run("-n", "2").stdout.fnmatch_lines(["*reused (no migration ran)*"])
    assert project.migrations_run() == 1

    migration = project.path / "migrations/versions/0004_log.py"
    migration.write_text(migration.read_text() + "\n# changed\n")
    project.run("-n", "2").assert_outcomes(passed=1)
    assert project.migrations_run() == 2
    runs = [line.split() for line in (project.path / "templates.txt").read_text().splitlines()]
    assert [reused for _, reused in runs] == ["False", "True", "False"]
    assert runs[0][0] == runs[1][0] != runs[2][0], "a changed migration must give a new template"


def test_a_run_that_never_asks_for_a_database_connects_to_nothing(project: InnerProject) -> None:
    project.write_ini(pgtemplate_url="postgresql://nobody@127.0.0.1:1/postgres")
    project.write_tests("def test_plain():\n    assert True\n")
    result = project.run("-n", "2")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*pgtemplate: PostgreSQL*")


def test_header_names_the_server_and_where_settings_came_from(project: InnerProject) -> None:
    project.write_tests("def test_plain():\n    pass\n")
    result = project.run("--pgtemplate-reset", "truncate-all")
    url = make_url(project.server_url)
    result.stdout.fnmatch_lines(
        [
            f"pgtemplate: server {redacted(url)} (ini), "  # the password masked: ***
            "schema from *alembic.ini*, reset truncate-all (cli)*"
        ]
    )
    assert not url.password or url.password not in result.stdout.str()


CONFTEST_READS_THE_URL_AT_IMPORT = """
import os

# what an application's settings module does: read once, when conftest imports the app
APP_DATABASE_URL = os.environ.get("DATABASE_URL", "the shell's value")
"""


@pytest.mark.parametrize("server", ["named", "own"])
def test_export_env_is_set_before_conftest_files_and_test_modules_are_imported(
    project: InnerProject, monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    """An application engine built at import would otherwise migrate the shell's database."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@127.0.0.1:1/the_apps_own")
    settings = {"pgtemplate_export_env": "DATABASE_URL, OTHER_URL"}
    if server == "own":
        settings["pgtemplate_url"] = ""
    project.add_ini(**settings)
    (project.path / "tests").mkdir()
    (project.path / "tests" / "conftest.py").write_text(CONFTEST_READS_THE_URL_AT_IMPORT)
    (project.path / "tests" / "test_it.py").write_text(
        textwrap.dedent(
            """
            import os

            import conftest

            AT_IMPORT = os.environ["DATABASE_URL"]

            def test_exported(pg_database):
                assert conftest.APP_DATABASE_URL == AT_IMPORT == pg_database.url
                assert pg_database.url == os.environ["OTHER_URL"]
                assert pg_database.url.startswith("postgresql+asyncpg://")
            """
        )
    )
    for args in (("-n", "2"), ("-p", "no:xdist")):
        project.run(*args, "tests").assert_outcomes(passed=1)


SETTINGS_IN_PARTS = """
import os

# an app whose settings come in parts (host, port, database), read once at import
PARTS = {name: os.environ.get(name) for name in ("PG_HOST", "PG_PORT", "PG_DB", "PG_SYNC")}
"""


def test_export_env_can_hand_out_the_url_in_parts(project: InnerProject) -> None:
    project.add_ini(
        pgtemplate_export_env="PG_HOST={host} PG_PORT={port}, PG_DB={database} PG_SYNC={sync_url}"
    )
    (project.path / "tests").mkdir()
    (project.path / "tests" / "conftest.py").write_text(SETTINGS_IN_PARTS)
    (project.path / "tests" / "test_it.py").write_text(
        textwrap.dedent(
            """
            from sqlalchemy.engine import make_url

            import conftest

            def test_parts(pg_worker_database):
                url = make_url(pg_worker_database.url)
                assert conftest.PARTS == {
                    "PG_HOST": url.host,
                    "PG_PORT": str(url.port),
                    "PG_DB": pg_worker_database.name,
                    "PG_SYNC": pg_worker_database.sync_url,
                }
            """
        )
    )
    project.run("-n", "2", "tests").assert_outcomes(passed=1)
    project.add_ini(pgtemplate_export_env="PG_DB={dbname}")
    result = project.run("-p", "no:xdist", "tests")
    result.stderr.fnmatch_lines(
        ["*NAME={field} with field one of *'database'* (got 'PG_DB={dbname}')*"]
    )


def test_worker_database_urls_work_for_asyncpg_psycopg_and_libpq(project: InnerProject) -> None:
    project.write_tests(
        """
        import asyncpg, psycopg, subprocess
        from sqlalchemy import create_engine, text
        from sqlalchemy.ext.asyncio import create_async_engine

        async def test_urls(pg_database):
            engine = create_async_engine(pg_database.url)
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
            await engine.dispose()
            with create_engine(pg_database.sync_url).connect() as conn:
                assert conn.scalar(text("SELECT current_database()")) == pg_database.name
            libpq = pg_database.url.replace("+asyncpg", "")
            assert libpq == pg_database.libpq_url
            out = subprocess.run(["psql", libpq, "-Atc", "SELECT current_database()"],
                                 capture_output=True, text=True, check=True).stdout
            assert out.strip() == pg_database.name
            conn = await asyncpg.connect(libpq)
            await conn.close()
        """
    )
    project.run().assert_outcomes(passed=1)


def test_create_all_callable_instead_of_alembic(project: InnerProject) -> None:
    # Unique per run (the fingerprint covers the file), so no template an earlier, killed run
    # left behind is ever reused: that would leave migrations_run() at 0, for good.
    project.pytester.makepyfile(
        schema=f"""
        # {uuid.uuid4().hex}
        import os
        from sqlalchemy import Column, Integer, MetaData, String, Table
        from sqlalchemy.ext.asyncio import create_async_engine

        metadata = MetaData()
        Table("note", metadata, Column("id", Integer, primary_key=True), Column("body", String))

        async def create_all(url):
            with open(os.environ["MIGRATION_LOG"], "a") as log:
                log.write("create_all\\n")
            engine = create_async_engine(url)
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            await engine.dispose()
        """
    )
    project.write_ini(
        pgtemplate_url=project.server_url,
        pgtemplate_migrate="schema:create_all",
        pythonpath=".",
        asyncio_mode="auto",
    )
    project.write_tests(
        """
        import pytest
        from sqlalchemy import text

        @pytest.mark.parametrize("n", range(4))
        async def test_note(pg_session, n):
            assert await pg_session.scalar(text("SELECT count(*) FROM note")) == 0
            await pg_session.execute(text("INSERT INTO note (body) VALUES ('x')"))
            await pg_session.commit()
        """
    )
    project.run("-n", "2").assert_outcomes(passed=4)
    assert project.migrations_run() == 1
