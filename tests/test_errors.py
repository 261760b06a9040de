"""Every bad input gets one clear error that names the fix, fast, and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from _harness import temporary_role, with_database, with_user
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


def test_a_shared_setup_error_is_shown_in_full_once(project: InnerProject) -> None:
    project.write_ini(pgtemplate_url="postgresql://postgres@127.0.0.1:1/postgres")
    project.write_tests(
        "import pytest\n\n@pytest.mark.parametrize('n', range(6))\n"
        "def test_db(pg_database, n):\n    pass\n"
    )
    result = project.run("-p", "no:xdist")
    result.assert_outcomes(errors=6)
    # The reports, not pytest's one-line summary, whose width follows the terminal's.
    reports = result.stdout.str().split("short test summary info")[0]
    assert reports.count("Is the server running?") == 1
    assert reports.count("the same error for every test that needs it") == 5


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
    project.add_ini(pgtemplate_keep_failed="maybe")
    result = project.run()
    assert result.ret == 4
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest-pgtemplate: pgtemplate_keep_failed must be a boolean, one of "
            "true/false/yes/no/on/off/1/0 (got 'maybe')"
        ]
    )


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
    with temporary_role(project.admin, "NOCREATEDB") as (role, password):
        project.write_ini(pgtemplate_url=with_user(project.server_url, role, password))
        project.write_tests(USES_DATABASE)
        result = project.run()
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


@pytest.mark.parametrize(("given", "port"), [("ini", "abc"), ("env", "0"), ("cli", "99999")])
def test_a_bad_port_stops_the_run_naming_it(
    project: InnerProject, monkeypatch: pytest.MonkeyPatch, given: str, port: str
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    project.write_ini(**({"pgtemplate_url": url} if given == "ini" else {}))
    if given == "env":
        monkeypatch.setenv("PGTEMPLATE_URL", url)
    project.write_tests(USES_DATABASE)
    result = project.run("-n", "2", *([f"--pgtemplate-url={url}"] if given == "cli" else []))
    assert result.ret == 4
    named = {"ini": "pgtemplate_url", "env": "PGTEMPLATE_URL", "cli": "--pgtemplate-url"}[given]
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-pgtemplate: {named} '{url}' has a bad port: expected a number from "
            f"1 to 65535, e.g. 5432 (got '{port}')"
        ]
    )
    assert "Traceback" not in result.stderr.str()


def test_a_cache_dir_that_cannot_be_made_or_is_a_file(project: InnerProject) -> None:
    project.write_ini()  # no server named: the plugin's own, in the cache dir given
    project.write_tests(USES_DATABASE)
    result = project.run("-p", "no:xdist", "--pgtemplate-cache-dir=/proc/nope")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*pytest-pgtemplate: the own server's cache directory /proc/nope cannot be created "
            "under /proc (No such file or directory): set pgtemplate_cache_dir (or "
            "PGTEMPLATE_CACHE_DIR) to another directory, one you may create and write"
        ]
    )
    (project.path / "cache").write_text("")
    file_result = project.run("-p", "no:xdist", "--pgtemplate-cache-dir=cache")  # rootdir's
    file_result.assert_outcomes(errors=2)
    file_result.stdout.fnmatch_lines(
        [
            f"*pytest-pgtemplate: the own server's cache directory {project.path}/cache must be "
            "a directory (it is a file): delete it, or set pgtemplate_cache_dir*"
        ]
    )
    for done in (result, file_result):
        done.stdout.no_fnmatch_line("*Traceback*")
        done.stdout.no_fnmatch_line("*FileNotFoundError*")


def test_an_alembic_ini_that_is_a_directory(project: InnerProject) -> None:
    project.add_ini(pgtemplate_alembic_ini=".")
    project.write_tests(USES_DATABASE)
    result = project.run()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            f"*alembic config '{project.path}' is a directory, not a file (it holds "
            f"'{project.path}/alembic.ini'). Set pgtemplate_alembic_ini to your alembic.ini*"
        ]
    )


def test_sslmode_require_on_a_server_without_ssl(project: InnerProject) -> None:
    row = project.admin.execute("SHOW ssl").fetchone()
    if row is not None and row[0] == "on":
        pytest.skip("this server accepts SSL")
    separator = "&" if "?" in project.server_url else "?"
    project.add_ini(pgtemplate_url=f"{project.server_url}{separator}sslmode=require")
    project.write_tests(USES_DATABASE)
    result = project.run()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*pytest-pgtemplate: PostgreSQL at postgresql://*sslmode=require does not accept "
            "SSL connections, and pgtemplate_url requires them (sslmode=require): drop sslmode "
            "from pgtemplate_url, or enable SSL on the server*"
        ]
    )
    result.stdout.no_fnmatch_line("*Is the server running?*")


def test_a_role_at_its_connection_limit(project: InnerProject) -> None:
    with temporary_role(project.admin, "CREATEDB CONNECTION LIMIT 1") as (role, password):
        url = with_user(project.server_url, role, password)
        with psycopg.connect(url):  # the one connection the role may have
            project.add_ini(pgtemplate_url=url)
            project.write_tests(USES_DATABASE)
            result = project.run()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            f"*pytest-pgtemplate: PostgreSQL at * refused the connection: role '{role}' is at "
            f'its CONNECTION LIMIT (too many connections for role "{role}"). Fix: run fewer '
            f"xdist workers (-n), or ALTER ROLE {role} CONNECTION LIMIT <more>"
        ]
    )
    result.stdout.no_fnmatch_line("*asyncpg/connect_utils.py*")


FAILS = """
def test_fails(pg_database):
    assert False
"""


def test_no_keep_failed_beats_ini_and_env(
    project: InnerProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.add_ini(pgtemplate_keep_failed="true")
    monkeypatch.setenv("PGTEMPLATE_KEEP_FAILED", "yes")
    project.write_tests(FAILS)
    kept = project.run("-p", "no:xdist")
    kept.assert_outcomes(failed=1)
    kept.stdout.fnmatch_lines(["*database kept for inspection: psql *"])
    assert len(project.databases("kept")) == 1
    negated = project.run("-p", "no:xdist", "--no-pgtemplate-keep-failed")
    negated.assert_outcomes(failed=1)
    negated.stdout.no_fnmatch_line("*database kept*")
    assert len(project.databases("kept")) == 1, "no copy kept this time"


def test_typos_in_ini_keys_and_env_vars_are_named_once_per_run(
    project: InnerProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.add_ini(pgtemplate_ulr="postgresql://postgres@127.0.0.1:5432/postgres")
    monkeypatch.setenv("PGTEMPLATE_URI", "postgresql://postgres@127.0.0.1:5432/postgres")
    monkeypatch.setenv("PGTEMPLATE_TEST_URL", project.server_url)  # the suite's own: no warning
    monkeypatch.setenv("PGTEMPLATE_TEST_PG_BINARIES", "/nonexistent")
    project.write_tests("def test_nothing():\n    pass\n")
    result = project.run("-n", "2")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    ini = (
        "PgTemplateWarning: pgtemplate_ulr in tox.ini is not a pytest-pgtemplate setting, so it "
        "is ignored; did you mean pgtemplate_url?"
    )
    env = (
        "PgTemplateWarning: environment variable PGTEMPLATE_URI is not a pytest-pgtemplate "
        "setting, so it is ignored; did you mean PGTEMPLATE_URL?"
    )
    assert (out.count(ini), out.count(env)) == (1, 1), out
    assert "PGTEMPLATE_TEST" not in out


def _template_name(project: InnerProject) -> str:
    migrator = AlembicMigrator(Path(project.path / "alembic.ini"))
    query = "SELECT current_setting('server_version_num')::int, current_user"
    row = project.admin.execute(query).fetchone()
    assert row is not None
    return template_name(template_fingerprint(migrator, row[0] // 10000, row[1]))
