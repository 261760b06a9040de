"""Soak: many runs with random SIGKILLs and concurrent pairs against one server.

    python benchmarks/soak.py [--runs 50] [--seed 1] [--url URL]

Each run is a real ``pytest -n 2`` of a scratch project whose migrations are new (so the soak
builds its own template). Tests check they are on their own worker's database and that it
starts clean; a failure of either is a wrong-database incident. At the end, one more run
sweeps, and the report counts what is left of the soak's databases.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TESTS = """
import os, random, time
import pytest
from sqlalchemy import text

@pytest.mark.parametrize("n", range(6))
async def test_isolated(pg_session, pg_worker_database, n):
    on = await pg_session.scalar(text("SELECT current_database()"))
    rows = await pg_session.scalar(text("SELECT count(*) FROM customer"))
    if on != pg_worker_database.name or rows != 0:
        with open(os.environ["SOAK_INCIDENTS"], "a") as log:
            log.write(f"{on} {pg_worker_database.name} {rows}\\n")
    await pg_session.execute(text("INSERT INTO customer (email) VALUES ('soak@example.com')"))
    await pg_session.commit()
    time.sleep(random.uniform(0, 0.3))
"""
COUNTING_MIGRATION = '''"""Counts template builds. {marker}"""
import os

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with open(os.environ["SOAK_BUILDS"], "a") as log:
        log.write("built\\n")
'''


def make_project(base: Path, url: str) -> Path:
    project = base / "project"
    project.mkdir()
    shutil.copy(REPO / "alembic.ini", project / "alembic.ini")
    shutil.copytree(
        REPO / "migrations", project / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    marker = uuid.uuid4().hex
    (project / "migrations/versions/0004_soak.py").write_text(
        COUNTING_MIGRATION.format(marker=marker)
    )
    (project / "test_soak.py").write_text(TESTS)
    (project / "pytest.ini").write_text(
        f"[pytest]\npgtemplate_url = {url}\nasyncio_mode = auto\n"
        "asyncio_default_fixture_loop_scope = session\nasyncio_default_test_loop_scope = session\n"
    )
    return project


def start(project: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def one_round(project: Path, env: dict[str, str], rng: random.Random) -> tuple[int, int]:
    """A single run or a concurrent pair; maybe SIGKILL one. Returns (runs, killed)."""
    runs = [start(project, env) for _ in range(rng.choice((1, 2)))]
    killed = 0
    if rng.random() < 0.4:
        time.sleep(rng.uniform(0.5, 3.0))
        victim = rng.choice(runs)
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            killed = 1
    for run in runs:
        run.wait(300)
    return len(runs), killed


def plugin_databases(url: str) -> set[str]:
    """By name, marked or not: a run killed mid-CREATE leaves a database without a marker."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pgtemplate\\_%'"
        ).fetchall()
    return {row[0] for row in rows}


def template_of(url: str, builds_before: set[str]) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pgtemplate\\_tpl\\_%'"
        ).fetchall()
    new = {row[0] for row in rows} - builds_before
    return new.pop() if len(new) == 1 else ""


def drop(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="pgtemplate-soak-") as scratch:
        base = Path(scratch)
        project = make_project(base, args.url)
        builds, incidents = base / "builds.log", base / "incidents.log"
        env = {**os.environ, "SOAK_BUILDS": str(builds), "SOAK_INCIDENTS": str(incidents)}
        env.pop("PGTEMPLATE_URL", None)
        with psycopg.connect(args.url, autocommit=True) as conn:
            before = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
        started, runs, kills = time.monotonic(), 0, 0
        while runs < args.runs:
            count, killed = one_round(project, env, rng)
            runs, kills = runs + count, kills + killed
        subprocess.run(
            [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider"],
            cwd=project,
            env=env,
            capture_output=True,
            check=False,
        )  # final sweep
        template = template_of(args.url, before)
        leaked = sorted(plugin_databases(args.url) - before - {template})
        build_count = len(builds.read_text().splitlines()) if builds.exists() else 0
        incident_count = len(incidents.read_text().splitlines()) if incidents.exists() else 0
        print(f"| pytest runs (alone or in concurrent pairs) | {runs} |")
        print(f"| SIGKILLs | {kills} |")
        print(f"| leaked databases after the final sweep (target 0) | {len(leaked)} |")
        print(f"| template builds for the fingerprint (target 1) | {build_count} |")
        print(f"| wrong-database incidents (target 0) | {incident_count} |")
        print(f"| wall time | {time.monotonic() - started:.0f} s |")
        for name in [*leaked, template]:
            if name:
                drop(args.url, name)


if __name__ == "__main__":
    main()
