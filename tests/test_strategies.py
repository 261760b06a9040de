"""Reset strategies, database settings, event-loop scopes and kept databases, end to end."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from sqlalchemy.engine import make_url

from _harness import drop_database, with_database
from conftest import InnerProject
from pytest_pgtemplate import ResetError
from pytest_pgtemplate.reset.resetter import open_resetter

SEEDS_SURVIVE = """
    import pytest
    from sqlalchemy import text

    @pytest.mark.parametrize("n", range(3))
    async def test_seeds_and_sequences_survive(pg_session, n):
        assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
        assert await pg_session.scalar(text("SELECT count(*) FROM customer")) == 0
        await pg_session.execute(text("DELETE FROM category WHERE code = 'toys'"))
        new_id = await pg_session.scalar(
            text("INSERT INTO category (code, title) VALUES ('x', 'X') RETURNING id"))
        assert new_id == 4, "the sequence must be back at the template's value"
        await pg_session.execute(text("INSERT INTO customer (email) VALUES ('a@b.c')"))
        await pg_session.commit()
"""


@pytest.mark.parametrize("strategy", ["restore", "rollback", "recreate"])
def test_exact_strategies_restore_seed_rows_and_sequences(
    project: InnerProject, strategy: str
) -> None:
    project.write_tests(SEEDS_SURVIVE)
    project.run("-p", "no:xdist", "--pgtemplate-reset", strategy).assert_outcomes(passed=3)


def test_restore_is_the_default_and_the_marker_overrides_it(project: InnerProject) -> None:
    project.write_tests(
        """
        import pytest
        from sqlalchemy import text

        import asyncpg

        @pytest.mark.pgtemplate(reset="truncate-all")
        async def test_1_classic(pg_session):
            assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3

        async def test_2_seed_rows_were_wiped_by_truncate_all(pg_worker_database):
            conn = await asyncpg.connect(pg_worker_database.libpq_url)  # no pg_database: as left
            assert await conn.fetchval("SELECT count(*) FROM category") == 0
            await conn.close()

        async def test_3_a_test_that_asks_for_the_database_starts_in_the_templates_state(
            pg_session,
        ):
            assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
        """
    )
    result = project.run("-p", "no:xdist")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["pgtemplate: * reset restore (default), project *"])


def test_rollback_also_undoes_other_connections(project: InnerProject) -> None:
    project.write_tests(
        """
        import asyncpg
        from sqlalchemy import text

        async def test_1_writes_outside_the_session(pg_session, pg_database):
            await pg_session.execute(text("INSERT INTO customer (email) VALUES ('s@x')"))
            await pg_session.commit()
            conn = await asyncpg.connect(pg_database.libpq_url)
            await conn.execute("INSERT INTO customer (email) VALUES ('other@x')")
            await conn.close()

        async def test_2_sees_neither(pg_session):
            assert await pg_session.scalar(text("SELECT count(*) FROM customer")) == 0
        """
    )
    project.run("-p", "no:xdist", "--pgtemplate-reset", "rollback").assert_outcomes(passed=2)


def test_recreate_undoes_schema_changes(project: InnerProject) -> None:
    project.write_tests(
        """
        import pytest
        from sqlalchemy import text

        @pytest.mark.pgtemplate(reset="recreate")
        async def test_1_changes_the_schema(pg_session):
            await pg_session.execute(text("CREATE TABLE scratch (id int)"))
            await pg_session.execute(text("ALTER TABLE category ADD COLUMN extra int"))
            await pg_session.commit()

        async def test_2_schema_is_the_templates(pg_session):
            exists = await pg_session.scalar(text("SELECT to_regclass('scratch') IS NOT NULL"))
            assert not exists
            columns = await pg_session.scalar(text(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'category'"))
            assert columns == 3
        """
    )
    project.run("-n", "2", "--dist", "loadfile").assert_outcomes(passed=2)


def test_database_settings_of_the_template_reach_every_clone(project: InnerProject) -> None:
    (project.path / "migrations/versions/0005_settings.py").write_text(
        'from alembic import op\n\nrevision = "0005"\ndown_revision = "0004"\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n"
        '    op.execute("CREATE SCHEMA app")\n'
        "    op.execute(\"DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET app.flavour = %L', "
        "current_database(), 'mint'); EXECUTE format('ALTER DATABASE %I SET search_path = "
        "app, public', current_database()); END $$\")\n"
    )
    project.write_tests(
        """
        from sqlalchemy import text

        async def test_settings(pg_session):
            assert await pg_session.scalar(text("SHOW app.flavour")) == "mint"
            assert await pg_session.scalar(text("SHOW search_path")) == "app, public"
        """
    )
    project.run("-n", "2").assert_outcomes(passed=1)


@pytest.mark.parametrize("loop_scope", ["function", "module", "session"])
def test_engine_and_session_work_with_every_loop_scope(
    project: InnerProject, loop_scope: str
) -> None:
    project.write_ini(
        pgtemplate_url=project.server_url,
        asyncio_mode="auto",
        asyncio_default_fixture_loop_scope="function",
        asyncio_default_test_loop_scope=loop_scope,
    )
    project.write_tests(
        """
        import pytest
        from sqlalchemy import text

        @pytest.mark.parametrize("n", range(4))
        async def test_engine(pg_engine, pg_session, n):
            async with pg_engine.connect() as conn:
                assert await conn.scalar(text("SELECT count(*) FROM customer")) == 0
            pg_session.add_all([])
            await pg_session.execute(text("INSERT INTO customer (email) VALUES ('e@x')"))
            await pg_session.commit()

        @pytest.mark.asyncio(loop_scope="module")
        async def test_module_loop_inside(pg_engine):
            async with pg_engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1

        def test_sync_test_gets_an_unbound_engine(pg_engine):
            assert pg_engine.pool.__class__.__name__ == "NullPool"
        """
    )
    result = project.run("-n", "2", "-W", "error::pytest.PytestUnraisableExceptionWarning")
    result.assert_outcomes(passed=6)
    result.stdout.no_fnmatch_line("*attached to a different loop*")


def test_keep_failed_keeps_a_copy_and_prints_its_url(project: InnerProject) -> None:
    project.write_tests(
        """
        from sqlalchemy import text

        async def test_fails(pg_session):
            await pg_session.execute(text("INSERT INTO customer (email) VALUES ('kept@x')"))
            await pg_session.commit()
            assert False, "boom"

        async def test_next_is_clean(pg_session):
            assert await pg_session.scalar(text("SELECT count(*) FROM customer")) == 0
        """
    )
    result = project.run("-p", "no:xdist", "--pgtemplate-keep-failed")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*database kept for inspection: psql postgresql://*_failed1*"])
    line = next(line for line in result.outlines if "kept for inspection" in line)
    password = make_url(project.server_url).password
    assert not password or password not in result.stdout.str(), "no password is printed"
    url = line.split("psql ", 1)[1].split()[0]
    with psycopg.connect(url, password=password) as kept:
        assert kept.execute("SELECT email FROM customer").fetchall() == [("kept@x",)]


def test_reset_refuses_a_database_the_plugin_did_not_create(
    admin: psycopg.Connection, server_url: str
) -> None:
    name = f"pgtemplate_foreign_{uuid.uuid4().hex[:8]}"  # its own: the only one it drops
    admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(server_url, name)
    try:
        with pytest.raises(ResetError, match="carries no pytest-pgtemplate worker marker"):
            asyncio.run(open_resetter(dsn, name, 5, None))
    finally:
        drop_database(admin, name)


def test_reset_refuses_when_the_connection_is_to_another_database(server_url: str) -> None:
    async def attempt() -> None:
        await open_resetter(server_url, "pgtemplate_some_worker", 5, None)

    with pytest.raises(ResetError, match="refusing to reset"):
        asyncio.run(attempt())


def test_truncate_is_a_deprecated_name_of_restore(project: InnerProject) -> None:
    project.write_tests(
        """
        import pytest

        @pytest.mark.pgtemplate(reset="truncate")
        def test_marker(pg_database):
            pass
        """
    )
    result = project.run("-p", "no:xdist", "--pgtemplate-reset", "truncate")
    result.assert_outcomes(passed=1, warnings=2)
    result.stdout.fnmatch_lines(["pgtemplate: * reset restore (cli), project *"])
    result.stdout.fnmatch_lines(["*reset strategy 'truncate' is now called 'restore'*"])
