"""The fixture chain as a user's conftest meets it: every link overridable, everything downstream
following the override; and the connections the plugin hands out start every test clean."""

from __future__ import annotations

import pytest

from conftest import InnerProject

SESSION_LOOP = {
    "asyncio_default_fixture_loop_scope": "session",
    "asyncio_default_test_loop_scope": "session",  # pooled connections reused across tests
}
EXTRA_MIGRATION = """
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE SEQUENCE cached_seq CACHE 20")
    op.execute("CREATE TABLE parent (id int PRIMARY KEY)")
    op.execute(
        "CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL"
        " REFERENCES parent DEFERRABLE INITIALLY DEFERRED)"
    )
"""

# Test 1 leaves every kind of session state on its pooled connection; test 2 gets that same
# connection back (one worker, a session loop, a pool) and must find none of it.
SESSION_STATE = """
import pytest
from sqlalchemy import text

LEAVE = [
    "CREATE TEMP TABLE scratch (id int)",
    "SET search_path = pg_catalog",
    "SET app.tenant = 'acme'",
    "LISTEN somewhere",
    "SELECT pg_advisory_lock(4242)",
    "PREPARE mine AS SELECT 1",
]


def pid_and_first_value(run):
    return run("SELECT pg_backend_pid()"), run("SELECT nextval('public.cached_seq')")


async def test_1_leaves_state_behind(pg_engine):
    async with pg_engine.connect() as conn:
        for statement in LEAVE:
            await conn.execute(text(statement))
        await conn.commit()
        pid = await conn.scalar(text("SELECT pg_backend_pid()"))
        assert await conn.scalar(text("SELECT nextval('public.cached_seq')")) == 1
    pytest.state = pid


async def test_2_gets_the_connection_back_clean(pg_engine):
    async with pg_engine.connect() as conn:
        assert await conn.scalar(text("SELECT pg_backend_pid()")) == pytest.state, "reused"
        assert await conn.scalar(text("SELECT to_regclass('pg_temp.scratch')")) is None
        assert await conn.scalar(text("SHOW search_path")) == '"$user", public'
        assert await conn.scalar(text("SELECT current_setting('app.tenant', true)")) in (None, "")
        assert await conn.scalar(text("SELECT count(*) FROM pg_listening_channels()")) == 0
        held = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid()"
        )
        assert await conn.scalar(text(held)) == 0
        await conn.execute(text("PREPARE mine AS SELECT 2"))
        assert await conn.scalar(text("SELECT nextval('cached_seq')")) == 1, "no cached values"


def test_3_sync_leaves_state_behind(pg_sync_engine):
    with pg_sync_engine.connect() as conn:
        conn.execute(text("CREATE TEMP TABLE scratch (id int)"))
        conn.execute(text("SET app.tenant = 'acme'"))
        conn.execute(text("PREPARE mine AS SELECT 3"))
        assert conn.scalar(text("SELECT nextval('cached_seq')")) == 1
        conn.commit()
        pytest.state = conn.scalar(text("SELECT pg_backend_pid()"))


def test_4_sync_gets_it_back_clean(pg_sync_engine):
    with pg_sync_engine.connect() as conn:
        assert conn.scalar(text("SELECT pg_backend_pid()")) == pytest.state, "reused"
        assert conn.scalar(text("SELECT to_regclass('pg_temp.scratch')")) is None
        assert conn.scalar(text("SELECT current_setting('app.tenant', true)")) in (None, "")
        conn.execute(text("PREPARE mine AS SELECT 4"))
        assert conn.scalar(text("SELECT nextval('cached_seq')")) == 1
"""


@pytest.mark.parametrize("reset", ["restore", "rollback"])
def test_connections_start_every_test_clean(project: InnerProject, reset: str) -> None:
    (project.path / "migrations/versions/0005_extra.py").write_text(EXTRA_MIGRATION)
    project.add_ini(pgtemplate_reset=reset, **SESSION_LOOP)
    project.write_tests(SESSION_STATE)
    project.run("-p", "no:xdist").assert_outcomes(passed=4)


# An idle pooled connection still holding an advisory lock would block every other connection
# that asks for it: the pools are cleaned at each test's end (test 2 never checks that
# connection out, so only that clean can release it).
ADVISORY_LOCK = """
import asyncpg
from sqlalchemy import text


async def test_1_leaves_an_advisory_lock_on_a_pooled_connection(pg_engine):
    async with pg_engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(4242)"))
        await conn.commit()


async def taken_by_another_connection(database, key):
    other = await asyncpg.connect(database.libpq_url)
    try:
        return await other.fetchval("SELECT pg_try_advisory_lock($1)", key)
    finally:
        await other.close()


async def test_2_another_connection_gets_it(pg_database):
    assert await taken_by_another_connection(pg_database, 4242)


def test_3_sync_leaves_one_too(pg_sync_engine):
    with pg_sync_engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(4343)"))
        conn.commit()


async def test_4_another_connection_gets_that_one(pg_database):
    assert await taken_by_another_connection(pg_database, 4343)
"""


@pytest.mark.parametrize("reset", ["restore", "rollback"])
def test_an_advisory_lock_left_on_a_pooled_connection_is_released_after_the_test(
    project: InnerProject, reset: str
) -> None:
    project.add_ini(pgtemplate_reset=reset, **SESSION_LOOP)
    project.write_tests(ADVISORY_LOCK)
    project.run("-p", "no:xdist").assert_outcomes(passed=4)


# The clean at a test's end costs a round trip per connection: one the test never checked out
# was cleaned at an earlier test's end and is left as it is (its last query stays that clean).
IDLE_LEFT_ALONE = """
import asyncpg
import pytest
from sqlalchemy import text


async def last_query_at(database, pid):
    other = await asyncpg.connect(database.libpq_url)
    try:
        return await other.fetchval(
            "SELECT query_start FROM pg_stat_activity WHERE pid = $1", pid
        )
    finally:
        await other.close()


async def test_1_leaves_two_idle_connections(pg_engine):
    async with pg_engine.connect() as a, pg_engine.connect() as b:
        pids = [await c.scalar(text("SELECT pg_backend_pid()")) for c in (a, b)]
    pytest.pids = set(pids)


async def test_2_uses_one_of_them(pg_engine, pg_database):
    async with pg_engine.connect() as conn:
        used = await conn.scalar(text("SELECT pg_backend_pid()"))
    (idle,) = pytest.pids - {used}
    pytest.idle = idle, await last_query_at(pg_database, idle)


async def test_3_the_other_one_was_not_cleaned_again(pg_database):
    idle, at = pytest.idle
    assert at is not None
    assert await last_query_at(pg_database, idle) == at
"""


def test_a_pooled_connection_no_test_used_is_not_cleaned_again(project: InnerProject) -> None:
    project.add_ini(**SESSION_LOOP)
    project.write_tests(IDLE_LEFT_ALONE)
    project.run("-p", "no:xdist").assert_outcomes(passed=3)


# A connection still checked out at a test's end misses that clean: the next test that checks
# it out gets it cleaned first.
HELD_ACROSS = """
import pytest
from sqlalchemy import text


async def test_1_keeps_a_connection_past_its_end(pg_engine):
    conn = await pg_engine.connect()
    await conn.execute(text("SET app.tenant = 'acme'"))
    await conn.commit()
    pytest.held = conn, await conn.scalar(text("SELECT pg_backend_pid()"))
    await conn.commit()


async def test_2_gets_it_clean(pg_engine):
    held, pid = pytest.held
    await held.close()
    async with pg_engine.connect() as conn:
        assert await conn.scalar(text("SELECT pg_backend_pid()")) == pid, "reused"
        assert await conn.scalar(text("SELECT current_setting('app.tenant', true)")) in (None, "")
"""


def test_a_connection_held_past_a_tests_end_is_cleaned_at_its_next_checkout(
    project: InnerProject,
) -> None:
    project.add_ini(**SESSION_LOOP)
    project.write_tests(HELD_ACROSS)
    project.run("-p", "no:xdist").assert_outcomes(passed=2)


DANGLING = """
import pytest
from sqlalchemy import exc, text


async def test_a_commit_that_leaves_a_deferred_fk_dangling_fails(pg_session):
    await pg_session.execute(text("INSERT INTO child VALUES (1, 99)"))
    with pytest.raises(exc.IntegrityError, match="child_parent_id_fkey"):
        await pg_session.commit()


async def test_a_commit_that_satisfies_it_at_the_end_passes(pg_session):
    await pg_session.execute(text("INSERT INTO child VALUES (1, 7)"))
    await pg_session.execute(text("INSERT INTO parent VALUES (7)"))
    await pg_session.commit()
    # and the constraint is deferred again, as in a new transaction
    await pg_session.execute(text("INSERT INTO child VALUES (2, 8)"))
    await pg_session.execute(text("INSERT INTO parent VALUES (8)"))
    await pg_session.commit()


def test_the_same_in_sync_code(pg_sync_session):
    pg_sync_session.execute(text("INSERT INTO child VALUES (1, 99)"))
    with pytest.raises(exc.IntegrityError):
        pg_sync_session.commit()
"""


def test_rollback_checks_deferred_constraints_at_each_commit(project: InnerProject) -> None:
    (project.path / "migrations/versions/0005_extra.py").write_text(EXTRA_MIGRATION)
    project.add_ini(pgtemplate_reset="rollback")
    project.write_tests(DANGLING)
    project.run("-n", "2").assert_outcomes(passed=3)


OTHER_DATABASE = """
import pytest


@pytest.fixture
def pg_database(pg_empty_database):
    return pg_empty_database


async def test_async_fixtures_follow(pg_engine, pg_session, pg_empty_database):
    from sqlalchemy import text

    async with pg_engine.connect() as conn:
        assert await conn.scalar(text("SELECT current_database()")) == pg_empty_database.name
    assert await pg_session.scalar(text("SELECT current_database()")) == pg_empty_database.name


def test_sync_fixtures_follow(pg_sync_engine, pg_sync_session, pg_empty_database):
    from sqlalchemy import text

    with pg_sync_engine.connect() as conn:
        assert conn.scalar(text("SELECT current_database()")) == pg_empty_database.name
    assert pg_sync_session.scalar(text("SELECT current_database()")) == pg_empty_database.name
"""


def test_a_conftest_pg_database_redirects_engines_and_sessions(project: InnerProject) -> None:
    project.write_tests(OTHER_DATABASE)
    project.run("-n", "2").assert_outcomes(passed=2)


OWN_ENGINES = """
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


@pytest.fixture
def pg_engine(pg_database):
    return create_async_engine(pg_database.url, poolclass=NullPool, echo_pool=True)


@pytest.fixture
def pg_sync_engine(pg_database):
    engine = create_engine(pg_database.sync_url, poolclass=NullPool, echo_pool=True)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("n", range(2))
async def test_the_session_is_on_the_suites_engine(pg_engine, pg_session, n):
    assert pg_session.bind is pg_engine
    await pg_session.execute(text("INSERT INTO customer (email) VALUES ('a@b')"))
    await pg_session.commit()
    assert await pg_session.scalar(text("SELECT count(*) FROM customer")) == 1


@pytest.mark.parametrize("n", range(2))
def test_the_sync_session_too(pg_sync_engine, pg_sync_session, n):
    assert pg_sync_session.bind is pg_sync_engine
    pg_sync_session.execute(text("INSERT INTO customer (email) VALUES ('a@b')"))
    pg_sync_session.commit()
    assert pg_sync_session.scalar(text("SELECT count(*) FROM customer")) == 1
"""


def test_a_conftest_engine_is_the_one_sessions_use(project: InnerProject) -> None:
    project.write_tests(OWN_ENGINES)
    project.run("-n", "2").assert_outcomes(passed=4)
