"""Crashes, concurrency and clean-up: real processes, real server, no mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from _harness import drop_database, new_project_name
from conftest import InnerProject, plugin_databases
from pytest_pgtemplate.naming import DatabaseTag
from pytest_pgtemplate.sweep import LIVENESS_CLASS, lock_key

SLOW = """
import time

def test_slow(pg_database):
    time.sleep({seconds})
"""

HELD = """
import pathlib, time

def test_held(pg_database):
    deadline = time.monotonic() + 120
    while not pathlib.Path({release!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def start_run(directory: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", *args],
        cwd=directory,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for_new(project: InnerProject, known: set[str], seconds: float = 60) -> set[str]:
    """The project's worker databases that are not in ``known``, once there are any."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new = project.databases("worker") - known
        if new:
            return new
        time.sleep(0.1)
    raise AssertionError("no worker database appeared")


def test_two_runs_at_once_on_other_machines_migrate_once(project: InnerProject) -> None:
    project.write_tests(
        """
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_db(pg_database, n):
            pass
        """
    )
    twin = project.path.parent / f"{project.path.name}-twin"
    shutil.copytree(project.path, twin)  # own directory: its file locks coordinate nothing
    try:
        runs = [start_run(directory, "-n", "2") for directory in (project.path, twin)]
        outputs = [run.communicate(timeout=180)[0].decode() for run in runs]
    finally:
        shutil.rmtree(twin, ignore_errors=True)
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
    assert project.migrations_run() == 1, outputs


def test_a_killed_runs_databases_are_swept_and_a_live_run_is_untouched(
    project: InnerProject,
) -> None:
    project.write_tests(SLOW.format(seconds=120))
    killed = start_run(project.path, "-p", "no:xdist")
    dead = wait_for_new(project, set())
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert dead <= project.databases("worker"), "SIGKILL gave the run no chance to clean up"

    live_dir = project.path.parent / f"{project.path.name}-live"
    live_dir.mkdir()
    shutil.copytree(project.path / "migrations", live_dir / "migrations")
    shutil.copy(project.path / "alembic.ini", live_dir / "alembic.ini")
    shutil.copy(project.path / "tox.ini", live_dir / "tox.ini")
    release = live_dir / "release"  # it stays in its test until then, however slow we are
    (live_dir / "test_live.py").write_text(HELD.format(release=str(release)))
    live = start_run(live_dir, "-p", "no:xdist")  # the same project: its tox.ini
    try:
        live_dbs = wait_for_new(project, dead)
        project.write_tests("def test_quick(pg_database):\n    pass\n")
        project.run("-p", "no:xdist").assert_outcomes(passed=1)
        assert not dead & project.databases(), "the next run's sweep drops the dead run's"
        assert live_dbs <= project.databases("worker"), "a live run's database is never swept"
    finally:
        release.touch()
        output = live.communicate(timeout=120)[0].decode()
        shutil.rmtree(live_dir, ignore_errors=True)
    assert live.returncode == 0, output


def test_a_killed_worker_is_replaced_by_one_with_a_working_database(
    project: InnerProject,
) -> None:
    project.write_tests(
        """
        import os, signal
        import pytest

        @pytest.mark.parametrize("n", range(8))
        def test_db(pg_database, n, tmp_path_factory):
            flag = tmp_path_factory.getbasetemp().parent / "killed"
            if n == 3 and not flag.exists():
                flag.write_text("once")
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = project.run("-n", "2", "--max-worker-restart", "2")
    result.assert_outcomes(passed=7, failed=1)
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running*test_db?3?*"])
    assert not project.databases("worker"), "the crashed worker's database is swept"


def test_gc_drops_exactly_the_dead_databases(admin: psycopg.Connection, server_url: str) -> None:
    """Every database here is the test's own, and every gc is scoped to its project or run."""
    suffix, run, project = uuid.uuid4().hex[:8], uuid.uuid4().hex[:12], new_project_name()
    dead, live = f"pgtemplate_{run}_gw0", f"pgtemplate_{run}_gw1"
    unmarked = f"pgtemplate_{run}_gw3"  # killed between CREATE DATABASE and COMMENT
    template = f"pgtemplate_tpl_gc{suffix}"
    foreign = f"pgtemplate_users_{suffix}"  # ours by prefix only: never touched
    for name in (unmarked, foreign):
        admin.execute(f'CREATE DATABASE "{name}"')
    for name in (dead, live):
        marker = DatabaseTag(
            "worker", run_id=run, owner=name, project=project, created="2026-01-01T00:00:00+00:00"
        )
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{marker.to_comment()}'")
    env = {**os.environ, "PGTEMPLATE_URL": server_url}
    try:
        with psycopg.connect(server_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s, %s)", (LIVENESS_CLASS, lock_key(live)))
            listed = json.loads(_cli(env, "list", "--json", "--run", run))
            alive = {row["name"]: row["alive"] in (True, "yes") for row in listed}
            if dead not in alive or unmarked not in alive or alive[dead]:
                # only on a shared server: another run's sweep dropped them, or holds the dead
                # owner's lock while it drops them (which lists it as alive meanwhile)
                pytest.skip("another run's sweep dropped this test's dead databases first")
            assert not alive[dead]
            assert alive[live]
            dry = {
                row["name"]
                for row in json.loads(_cli(env, "gc", "--dry-run", "--json", "--run", run))
            }
            if dead not in dry or unmarked not in dry:
                # the same race, a moment later: another run's sweep dropped one, or held its
                # owner's lock while gc looked (gc then leaves it to that sweep)
                pytest.skip("another run's sweep took this test's dead databases meanwhile")
            assert dead in dry
            assert unmarked in dry
            assert live not in dry
            assert foreign not in dry
            assert dead in plugin_databases(admin), "--dry-run drops nothing"
            _cli(env, "gc", "--run", run)
            # gone: dropped by this gc or, on a shared server, by another run's sweep that held
            # the owner's lock first (gc then rightly leaves it to that sweep)
            assert gone(admin, dead)
            assert gone(admin, unmarked)
            assert live in plugin_databases(admin)
            assert foreign in all_databases(admin)
            admin.execute(f'CREATE DATABASE "{template}"')
            comment = DatabaseTag("template", fingerprint=suffix, project=project).to_comment()
            admin.execute(f"COMMENT ON DATABASE \"{template}\" IS '{comment}'")
            finished = "IS_TEMPLATE true ALLOW_CONNECTIONS false"  # an unfinished one is swept
            admin.execute(f'ALTER DATABASE "{template}" WITH {finished}')
            _cli(env, "gc", "--project", project)
            assert template in plugin_databases(admin), "templates stay without --templates"
            _cli(env, "gc", "--templates", "--project", new_project_name())
            assert template in plugin_databases(admin), "--project scopes --templates"
            _cli(env, "gc", "--templates", "--project", project)  # never others' templates
            assert template not in plugin_databases(admin)
    finally:
        for name in (dead, live, template, unmarked, foreign):
            drop_database(admin, name)


def gone(admin: psycopg.Connection, name: str, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while name in all_databases(admin):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def all_databases(admin: psycopg.Connection) -> set[str]:
    return {row[0] for row in admin.execute("SELECT datname FROM pg_database").fetchall()}


def _cli(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "pytest_pgtemplate", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
