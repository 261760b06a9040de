"""A test that directly follows another's reset starts without a check; anything pytest ran in
between (a test without the database, a fixture's setup or finalizer) still gets one."""

from __future__ import annotations

from conftest import InnerProject

BETWEEN = """
    import asyncio

    import asyncpg
    import pytest
    from sqlalchemy import text

    async def write(database, email="left@x"):
        conn = await asyncpg.connect(database.libpq_url)
        await conn.execute("INSERT INTO customer (email) VALUES ($1)", email)
        await conn.close()

    async def customers(session):
        return await session.scalar(text("SELECT count(*) FROM customer"))

    @pytest.fixture
    async def writes_when_finalized(pg_worker_database):
        yield  # set up before pg_database, so finalized after its reset
        await write(pg_worker_database)

    @pytest.fixture
    async def writes_when_set_up(pg_worker_database):
        await write(pg_worker_database, "early@x")  # before pg_database: still undone

    @pytest.mark.parametrize("n", range(4))
    async def test_1_back_to_back(pg_session, n):
        assert await customers(pg_session) == 0
        await pg_session.execute(text("INSERT INTO customer (email) VALUES ('a@x')"))
        await pg_session.commit()

    async def test_2_a_fixture_set_up_before_the_database_writes(
        writes_when_set_up, pg_session
    ):
        assert await customers(pg_session) == 0

    async def test_2b_a_fixture_writes_after_the_reset(writes_when_finalized, pg_session):
        pass

    async def test_3_starts_with_it_undone(pg_session):
        assert await customers(pg_session) == 0

    async def test_4_without_the_database_writes(pg_worker_database):
        await write(pg_worker_database)

    async def test_5_starts_with_it_undone(pg_session):
        assert await customers(pg_session) == 0

    class TestXunitStyle:
        def teardown_method(self, method):  # pytest runs it after pg_database's reset
            asyncio.run(write(self.database, "xunit@x"))

        async def test_5b_teardown_method_writes(self, pg_worker_database, pg_session):
            self.database = pg_worker_database

    async def test_5c_starts_with_it_undone(pg_session):
        assert await customers(pg_session) == 0

    @pytest.mark.pgtemplate(reset="truncate-all")
    async def test_6_truncate_all(pg_session):
        pass

    async def test_7_seed_rows_are_back(pg_session):
        assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
"""


def test_only_what_ran_between_two_tests_costs_a_check(project: InnerProject) -> None:
    project.write_tests(BETWEEN)
    result = project.run("-p", "no:xdist", "-W", "ignore::pytest_pgtemplate.PgTemplateWarning")
    result.assert_outcomes(passed=13)
    # test_4 asks for no reset; the first tests of the chain start right after one
    result.stdout.fnmatch_lines(["pgtemplate: *; 12 reset(s) (* test(s) started right after one*"])


def test_the_same_across_two_workers(project: InnerProject) -> None:
    project.write_tests(BETWEEN)
    result = project.run(
        "-n", "2", "--dist", "loadfile", "-W", "ignore::pytest_pgtemplate.PgTemplateWarning"
    )
    result.assert_outcomes(passed=13)
