"""Never touch what isn't yours: each test reproduces one way a shared server could be harmed."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import psycopg
import pytest

from _harness import new_role_password, with_user
from conftest import InnerProject
from pytest_pgtemplate.claim import LIVENESS_CLASS, build_lock_key, lock_key
from pytest_pgtemplate.naming import DatabaseTag
from pytest_pgtemplate.sweep import drop_entries, inventory, sweepable

ROLE_PASSWORD = new_role_password()
"""Every ``scratch_role``'s: the plugin's own server asks every role for its password."""


def conninfo_url(admin: psycopg.Connection, user: str | None = None) -> str:
    """``admin``'s server and database, as ``admin``'s role or as a ``scratch_role``."""
    info = admin.info
    server = f"postgresql://{info.host}:{info.port}/{info.dbname}"
    if user is None:
        return with_user(server, info.user, info.password)
    return with_user(server, user, ROLE_PASSWORD)


def database_exists(admin: psycopg.Connection, name: str) -> bool:
    row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def create_marked(admin: psycopg.Connection, name: str, marker: DatabaseTag) -> None:
    admin.execute(f'CREATE DATABASE "{name}"')
    comment = marker.to_comment().replace("'", "''")
    admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'")


def drop_if_exists(admin: psycopg.Connection, name: str) -> None:
    """Our own database; on a shared server another run's sweep may drop it meanwhile."""
    if database_exists(admin, name):
        try:
            admin.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
        except psycopg.errors.InvalidCatalogName:
            return
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def databases_of_project(admin: psycopg.Connection, project: str) -> set[str]:
    rows = admin.execute(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
        " WHERE datname LIKE 'pgtemplate\\_%'"
    ).fetchall()
    return {
        name
        for name, comment in rows
        if (marker := DatabaseTag.from_comment(comment)) is not None and marker.project == project
    }


@contextmanager
def scratch_role(admin: psycopg.Connection) -> Iterator[str]:
    """A CREATEDB role that is not superuser; dropped with every database it owns."""
    role = f"pgtemplate_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{ROLE_PASSWORD}'")
    try:
        yield role
    finally:
        owned = admin.execute(
            "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba"
            " WHERE r.rolname = %s",
            (role,),
        ).fetchall()
        for (name,) in owned:
            drop_if_exists(admin, name)
        admin.execute(f"DROP ROLE {role}")


def test_a_sweep_never_drops_a_database_whose_owner_claimed_it_after_the_listing(
    admin: psycopg.Connection,
) -> None:
    """The old sweep judged from a lock listing taken before the database listing."""
    name = f"pgtemplate_{uuid.uuid4().hex[:12]}_gw0"
    create_marked(admin, name, DatabaseTag("worker", run_id=name[11:23], owner=name, project="t"))
    url = conninfo_url(admin)

    async def scenario() -> tuple[list[str], list[str]] | None:
        sweeper, live = await asyncpg.connect(url), await asyncpg.connect(url)
        try:
            listed = [e for e in await inventory(sweeper) if e.name == name]
            await live.execute("SELECT pg_advisory_lock($1, $2)", LIVENESS_CLASS, lock_key(name))
            if not database_exists(admin, name):
                return None  # dead until the lock: another run's sweep may have dropped it
            assert listed, "the fake dead worker database is listed"
            assert not listed[0].alive, "listed while its owner held no lock"
            result = await drop_entries(sweeper, listed)  # the owner is alive by now
            return [e.name for e in result.dropped], [e.name for e in result.alive]
        finally:
            await sweeper.close()
            await live.close()

    try:
        outcome = asyncio.run(scenario())
        if outcome is None:
            pytest.skip("a concurrent run's sweep dropped the fake dead database first")
        dropped, alive = outcome
        assert dropped == []
        assert alive == [name]
        assert database_exists(admin, name)
    finally:
        drop_if_exists(admin, name)


def test_a_sweep_skips_what_the_role_may_not_drop(admin: psycopg.Connection) -> None:
    name = f"pgtemplate_{uuid.uuid4().hex[:12]}_gw0"
    create_marked(admin, name, DatabaseTag("worker", run_id=name[11:23], owner=name, project="t"))
    try:
        with scratch_role(admin) as role:

            async def sweep_as_role() -> list[str]:
                conn = await asyncpg.connect(conninfo_url(admin, role))
                try:
                    mine = [e for e in await inventory(conn) if e.name == name]
                    return (await drop_entries(conn, mine)).refused
                finally:
                    await conn.close()

            refused = asyncio.run(sweep_as_role())
        if not refused and not database_exists(admin, name):
            pytest.skip("a concurrent run's sweep (a superuser's) dropped the fake database first")
        assert len(refused) == 1
        assert "must be owner" in refused[0]
        assert database_exists(admin, name)
    finally:
        drop_if_exists(admin, name)


ROLE_SUITE = """
import pytest
from sqlalchemy import text

@pytest.mark.parametrize("n", range(4))
async def test_writes_and_sees_seed_rows(pg_session, n):
    assert await pg_session.scalar(text("SELECT count(*) FROM customer")) == 0
    assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
    await pg_session.execute(text("INSERT INTO customer (email) VALUES ('a@b.c')"))
    await pg_session.execute(text("DELETE FROM category"))
    await pg_session.commit()
"""


def test_a_role_that_is_not_superuser_gets_its_own_template_and_works(
    project: InnerProject,
) -> None:
    admin = project.admin
    own_project = project.project
    project.write_tests(ROLE_SUITE)
    project.run("-n", "2").assert_outcomes(passed=4)  # as postgres: a template postgres owns
    dead = f"pgtemplate_{uuid.uuid4().hex[:12]}_gw0"  # a dead run's, which the role may not drop
    create_marked(
        admin, dead, DatabaseTag("worker", run_id=dead[11:23], owner=dead, project=own_project)
    )
    try:
        with scratch_role(admin) as role:
            url = conninfo_url(admin, role)
            project.add_ini(pgtemplate_url=url)
            result = project.run("-n", "2")
            result.assert_outcomes(passed=4)
            result.stdout.fnmatch_lines(
                ["*template pgtemplate_tpl_* built by gw*2 worker database(s) cloned*"]
            )
            if database_exists(admin, dead):  # else a superuser's sweep (shared server) got it
                warning = f"*warning: sweeping dead runs' databases: left {dead}: *must be owner*"
                result.stdout.fnmatch_lines([warning])
            assert project.migrations_run() == 2, "the role built a template of its own"
    finally:
        drop_if_exists(admin, dead)


def test_the_marker_takes_exactly_reset(project: InnerProject) -> None:
    project.write_tests(
        """
        import pytest

        @pytest.mark.pgtemplate("recreate")
        def test_positional():
            pass

        @pytest.mark.pgtemplate(strategy="recreate")
        def test_other_keyword():
            pass

        @pytest.mark.pgtemplate(reset="recreate")
        def test_right(pg_database):
            pass

        @pytest.mark.pgtemplate
        def test_bare_uses_the_database_with_the_configured_reset(request):
            assert "pg_database" in request.fixturenames
        """
    )
    result = project.run("-p", "no:xdist")
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.pgtemplate takes exactly reset=<strategy> (got ('recreate'))*",
            "*takes exactly reset=<strategy> (got (strategy='recreate'))*",
        ]
    )


def test_a_lost_lease_is_taken_again_before_the_next_test(project: InnerProject) -> None:
    """Without its locks, this run's database would look dead to every other run."""
    project.write_tests(
        f"""
        import psycopg
        from pytest_pgtemplate.claim import LIVENESS_CLASS, lock_key

        URL = {conninfo_url(project.admin)!r}
        HOLDERS = (
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid::bigint = %s AND objid::bigint = %s"
        )

        def holders(name):
            with psycopg.connect(URL, autocommit=True) as conn:
                return [r[0] for r in conn.execute(HOLDERS, (LIVENESS_CLASS, lock_key(name)))]

        def test_1_the_lease_connection_dies(pg_database):
            pids = holders(pg_database.name)
            assert len(pids) == 1
            with psycopg.connect(URL, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pids[0],))  # waits
            open("old_pid", "w").write(str(pids[0]))

        def test_2_the_claim_is_held_again(pg_database):
            pids = holders(pg_database.name)
            assert len(pids) == 1 and str(pids[0]) != open("old_pid").read()
        """
    )
    project.run("-p", "no:xdist").assert_outcomes(passed=2)


def test_a_copy_that_cannot_be_kept_is_a_warning_in_the_report(project: InnerProject) -> None:
    marker = DatabaseTag("kept", project=project.project).to_comment()
    project.write_tests(
        f"""
        from sqlalchemy import text

        async def test_fails_after_taking_the_copys_name(pg_session, pg_database):
            import psycopg
            from psycopg.sql import SQL, Identifier, Literal

            taken = Identifier(pg_database.name + "_failed1")
            url = {conninfo_url(project.admin)!r}
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(SQL("CREATE DATABASE {{}}").format(taken))
                comment = SQL("COMMENT ON DATABASE {{}} IS {{}}")
                conn.execute(comment.format(taken, Literal({marker!r})))
            assert False, "the test fails"

        def test_the_run_goes_on(pg_database):
            pass
        """
    )
    result = project.run("-p", "no:xdist", "--pgtemplate-keep-failed")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*warning: could not keep a copy of the database*already exists*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_two_repositories_with_the_same_directory_name_keep_their_templates(
    project: InnerProject,
) -> None:
    """Templates are pruned per project: the pyproject name, not the directory's basename."""
    admin, names = project.admin, [f"shop-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    roots = [project.path / side / "app" for side in ("left", "right")]
    ini = project.settings()
    ini.pop("pgtemplate_project", None)
    ini["pgtemplate_keep_templates"] = "1"
    try:
        for root, name in zip(roots, names, strict=True):
            shutil.copytree(project.path / "migrations", root / "migrations")
            shutil.copy(project.path / "alembic.ini", root / "alembic.ini")
            (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
            settings = "".join(f"{key} = {value}\n" for key, value in ini.items())
            (root / "pytest.ini").write_text("[pytest]\n" + settings)
            (root / "test_it.py").write_text("def test_db(pg_database):\n    pass\n")
            # each project's migrations differ, so each has a template of its own
            version = root / "migrations/versions/0004_log.py"
            version.write_text(version.read_text() + f"\n# {name}\n")
            done = _pytest(root)
            assert done.returncode == 0, done.stdout
        assert len(databases_of_project(admin, names[0])) == 1, "the twin pruned it"
        assert len(databases_of_project(admin, names[1])) == 1
    finally:
        for name in names:
            for database in databases_of_project(admin, name):
                drop_if_exists(admin, database)


def _pytest(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTEMPLATE_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


SCHEMA_CHANGES = """
from sqlalchemy import text


async def test_1_adds_a_column_and_a_table(pg_engine):
    async with pg_engine.begin() as conn:  # committed, whatever the reset strategy
        await conn.execute(text("ALTER TABLE customer ADD COLUMN nickname text"))
        await conn.execute(text("CREATE TABLE scratch (id int)"))
        await conn.execute(text("INSERT INTO scratch VALUES (1)"))


async def test_2_sees_the_templates_schema(pg_session):
    added = await pg_session.scalar(text(
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_name = 'customer' AND column_name = 'nickname'"
    ))
    assert added == 0
    assert await pg_session.scalar(text("SELECT to_regclass('scratch') IS NULL"))
    assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
"""


def test_a_schema_change_is_detected_and_the_database_recloned(project: InnerProject) -> None:
    project.write_tests(SCHEMA_CHANGES)
    for reset in ("restore", "rollback"):
        result = project.run("-p", "no:xdist", f"--pgtemplate-reset={reset}")
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines(
            [
                "*PgTemplateWarning: *test_1_adds_a_column_and_a_table changed the schema of *"
                're-cloned*@pytest.mark.pgtemplate(reset="recreate")*'
            ]
        )


def test_a_build_that_died_is_swept_and_one_in_progress_is_not(admin: psycopg.Connection) -> None:
    """Killed between CREATE DATABASE and COMMENT, or before the template was marked finished.

    On a shared server another run's sweep may drop the dead ones first: what counts is that they
    are gone and the live ones are not.
    """
    unmarked = f"pgtemplate_tpl_{uuid.uuid4().hex[:20]}"
    building = f"pgtemplate_tpl_{uuid.uuid4().hex[:20]}"
    url = conninfo_url(admin)

    async def scenario() -> None:
        sweeper, builder = await asyncpg.connect(url), await asyncpg.connect(url)
        try:
            await builder.execute("SELECT pg_advisory_lock($1, $2)", *build_lock_key(building))
            await builder.execute(f'CREATE DATABASE "{unmarked}"')
            await builder.execute(f'CREATE DATABASE "{building}"')
            comment = DatabaseTag("template", fingerprint="f", project="t").to_comment()
            await builder.execute(f"COMMENT ON DATABASE \"{building}\" IS '{comment}'")

            async def sweep() -> None:
                ours = [e for e in await inventory(sweeper) if e.name in (unmarked, building)]
                await drop_entries(sweeper, sweepable(ours))

            await sweep()
            assert not database_exists(admin, unmarked), "a dead build is swept"
            assert database_exists(admin, building), "a live build is left alone"
            # listed while building; finished (and its lock released) before the drop
            listed = [e for e in await inventory(sweeper) if e.name == building]
            await builder.execute(
                f'ALTER DATABASE "{building}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false'
            )
            await builder.execute("SELECT pg_advisory_unlock($1, $2)", *build_lock_key(building))
            assert not (await drop_entries(sweeper, sweepable(listed))).dropped
            assert database_exists(admin, building), "it finished meanwhile: kept"
            await builder.execute(f'ALTER DATABASE "{building}" WITH IS_TEMPLATE false')
            await sweep()  # unfinished again and nobody builds it: a dead build
            assert not database_exists(admin, building)
        finally:
            await sweeper.close()
            await builder.close()

    try:
        asyncio.run(scenario())
    finally:
        drop_if_exists(admin, unmarked)
        drop_if_exists(admin, building)
