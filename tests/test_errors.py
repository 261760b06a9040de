"""Every bad input gets one clear error that names the fix, fast, and leaves nothing behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg

from _harness import new_role_password, with_database, with_user
from conftest import InnerProject
from pytest_pgtemplate.claim import build_lock_key
from pytest_pgtemplate.migrators import AlembicMigrator
from pytest_pgtemplate.naming import template_name
from pytest_pgtemplate.template import template_fingerprint

USES_DATABASE = """
def test_uses_database(pg_database):
    pass

def test_uses_it_too(pg_database):
    pass
"""


def test_unreachable_server_fails_fast_with_the_fix(project: InnerProject) -> None:
    project.write_ini(pgtemplate_url="postgresql://postgres@127.0.0.1:1/postgres")
    project.write_tests(USES_DATABASE)
    result = project.run("-n", "2")  # a hang would meet the inner run's timeout
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*pytest-pgtemplate: cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:1/"
            "postgres*Is the server running? Set pgtemplate_url*"
        ]
    )
    result.stdout.no_fnmatch_line("*asyncpg/connect_utils.py*")


def test_wrong_database_in_url(project: InnerProject) -> None:
    project.write_ini(pgtemplate_url=with_database(project.server_url, "no_such_db_here"))
    project.write_tests(USES_DATABASE)
    result = project.run()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*database 'no_such_db_here' does not exist*maintenance*"])


def test_not_a_postgres_url_is_a_usage_error(project: InnerProject) -> None:
    project.write_ini(pgtemplate_url="mysql://root@127.0.0.1/db")
    result = project.run()
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*pgtemplate_url must point at PostgreSQL*mysql*"])


def test_missing_alembic_ini(project: InnerProject) -> None:
    (project.path / "alembic.ini").unlink()
    project.write_tests(USES_DATABASE)
    result = project.run()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*alembic config '*alembic.ini' does not exist. Set pgtemplate_alembic_ini*"]
    )


def test_bad_values_list_the_valid_ones(project: InnerProject) -> None:
    result = project.run("--pgtemplate-reset", "bogus")
    assert result.ret == 4
    result.stderr.re_match_lines(
        [
            r".*pgtemplate_reset must be one of \['restore', 'truncate-all', 'rollback', "
            r"'recreate'\] \(got 'bogus'\)"
        ]
    )
    result = project.run("--pgtemplate-lock-timeout", "soon")
    result.stderr.fnmatch_lines(["*pgtemplate_lock_timeout must be a positive number*'soon'*"])


def test_bad_marker_strategy(project: InnerProject) -> None:
    project.write_tests(
        """
        import pytest

        @pytest.mark.pgtemplate(reset="bogus")
        def test_marked():
            pass
        """
    )
    result = project.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.pgtemplate: pgtemplate_reset must be one of*"])


def test_failing_migration_names_the_revision_and_leaves_no_template(
    project: InnerProject,
) -> None:
    broken = project.path / "migrations/versions/0005_broken.py"
    broken.write_text(
        'import sqlalchemy as sa\nfrom alembic import op\n\nrevision = "0005"\n'
        'down_revision = "0004"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade():\n    op.execute('ALTER TABLE no_such_table ADD COLUMN x int')\n"
    )
    project.write_tests(USES_DATABASE)
    result = project.run("-n", "2")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*migration 0005 (*0005_broken.py) failed: UndefinedTableError: relation "
            '"no_such_table" does not exist (while running: ALTER TABLE no_such_table ADD '
            "COLUMN x int). The half-built template was dropped; fix the migration and run again."
        ]
    )
    assert not project.databases(), "nothing may be left behind"
    assert result.stderr.str().count("Running upgrade 0004 -> 0005") <= 1, "one attempt per run"

    broken.write_text(broken.read_text().replace("ALTER TABLE no_such_table", "ALTER TABLE review"))
    project.run("-n", "2").assert_outcomes(passed=2)


def test_crash_leftover_template_is_rebuilt_not_trusted(project: InnerProject) -> None:
    name = project.own(_template_name(project))  # dropped at the end whatever happens
    project.admin.execute(f'CREATE DATABASE "{name}"')  # unmarked: as if a build had crashed
    project.write_tests(
        """
        from sqlalchemy import text

        async def test_schema_is_there(pg_session):
            assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
        """
    )
    project.run().assert_outcomes(passed=1)
    assert project.migrations_run() == 1


def test_lock_timeout_when_another_run_holds_the_build_lock(project: InnerProject) -> None:
    key = build_lock_key(_template_name(project))
    with psycopg.connect(project.server_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", key)
        project.write_tests(USES_DATABASE)
        result = project.run("--pgtemplate-lock-timeout", "1")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*could not take the PostgreSQL advisory lock for template pgtemplate_tpl_* within 1 s*"
            "raise pgtemplate_lock_timeout*"
        ]
    )
    assert project.migrations_run() == 0


def test_role_without_createdb(project: InnerProject) -> None:
    role, password = f"pgtemplate_test_{uuid.uuid4().hex[:8]}", new_role_password()
    project.admin.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB PASSWORD '{password}'")
    try:
        project.write_ini(pgtemplate_url=with_user(project.server_url, role, password))
        project.write_tests(USES_DATABASE)
        result = project.run()
    finally:
        project.admin.execute(f"DROP ROLE {role}")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [f"*role '{role}' may not create databases*ALTER ROLE {role} CREATEDB*"]
    )


def test_leaked_transaction_does_not_hang_the_reset(project: InnerProject) -> None:
    project.write_tests(
        """
        import asyncpg
        import pytest

        LEAK = []

        async def test_leaves_a_transaction_open(pg_database):
            conn = await asyncpg.connect(pg_database.libpq_url)
            tx = conn.transaction()
            await tx.start()
            await conn.execute("INSERT INTO customer (email) VALUES ('leak@example.com')")
            LEAK.append(conn)  # never committed, never closed

        async def test_next_test_gets_a_clean_database(pg_database):
            conn = await asyncpg.connect(pg_database.libpq_url)
            assert await conn.fetchval("SELECT count(*) FROM customer") == 0
            await conn.close()
        """
    )
    result = project.run("-p", "no:xdist", "-W", "default", "--timeout", "60")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*PgTemplateWarning: test_inner.py::test_leaves_a_transaction_open left 1 "
            "connection(s) inside a transaction*idle in transaction*"
        ]
    )


def _template_name(project: InnerProject) -> str:
    migrator = AlembicMigrator(Path(project.path / "alembic.ini"))
    query = "SELECT current_setting('server_version_num')::int, current_user"
    row = project.admin.execute(query).fetchone()
    assert row is not None
    return template_name(template_fingerprint(migrator, row[0] // 10000, row[1]))
