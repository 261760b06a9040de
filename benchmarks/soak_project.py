"""The soak's scratch projects: one directory per simulated machine, identical migrations.

Every directory gets the repository's migrations plus one migration that records each template
build (so all runs share one template fingerprint, new to the server), a ``conftest.py`` that
records what each pytest process does (its run id, its phases, its failures) in append-only
JSON-lines files, and either the short suite or the live suite. The instrumentation writes with
``O_APPEND`` straight away, so a run SIGKILLed a moment later has still left its trace.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CONFTEST = '''"""Soak instrumentation (written by benchmarks/soak_project.py)."""
import json
import os
import time

import pytest

CLEAN = "SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM category)"
MARKER = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"


def log(variable, **fields):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "controller")
    fields.update(label=os.environ["SOAK_LABEL"], pid=os.getpid(), worker=worker, t=time.time())
    fd = os.open(os.environ[variable], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(fields) + "\\n").encode())
    finally:
        os.close(fd)


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    from pytest_pgtemplate.stash import PROVISIONER

    identity = config.stash[PROVISIONER].identity
    log("SOAK_EVENTS", event="configure", run_id=identity.run_id)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    stop = os.environ.get("SOAK_STOP")
    if stop and os.path.exists(stop):
        pytest.skip("the soak's rounds are over")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    if nextitem is None:
        log("SOAK_EVENTS", event="teardown")


def pytest_runtest_logreport(report):
    if report.failed and "PYTEST_XDIST_WORKER" in os.environ:  # not again in the controller
        text = str(report.longrepr)
        log("SOAK_FAILURES", when=report.when, test=report.nodeid, error=text[-1500:])


@pytest.fixture(scope="session", autouse=True)
def _soak_cloned(pg_template, pg_worker_database):
    database = pg_worker_database.name
    log("SOAK_EVENTS", event="cloned", database=database, template=pg_template.name)


async def check(session, database, project):
    """Incidents: not on this worker's database, not this run's, or not in the template state."""
    from sqlalchemy import text

    on = await session.scalar(text("SELECT current_database()"))
    comment = await session.scalar(text(MARKER), {"n": database.name})
    marker = json.loads(comment)["pgtemplate"] if comment else {}
    customers, categories = (await session.execute(text(CLEAN))).one()
    problems = []
    if on != database.name:
        problems.append(f"on {on}, not on the worker's {database.name}")
    if marker.get("owner") != database.name or marker.get("project") != project:
        problems.append(f"{database.name} carries marker {marker}")
    if (customers, categories) != (0, 3):
        problems.append(f"not clean: {customers} customers, {categories} categories")
    if problems:
        log("SOAK_INCIDENTS", database=database.name, problems=problems)
    await session.execute(text("INSERT INTO customer (email) VALUES ('soak@example.com')"))
    await session.execute(text("DELETE FROM category WHERE code = 'toys'"))
    await session.commit()
    return problems
'''

SHORT_TESTS = """import asyncio
import os
import random

import pytest
from conftest import check


@pytest.mark.parametrize("n", range({tests}))
async def test_own_clean_database(pg_session, pg_worker_database, n):
    assert not await check(pg_session, pg_worker_database, os.environ["SOAK_PROJECT"])
    await asyncio.sleep(random.uniform(0, 0.2))
"""

LIVE_TESTS = """import asyncio
import os

import pytest
from conftest import check


@pytest.mark.parametrize("n", range({tests}))
async def test_still_own_database(pg_session, pg_worker_database, n):
    assert not await check(pg_session, pg_worker_database, os.environ["SOAK_PROJECT"])
    await asyncio.sleep({sleep})
"""

COUNTING_MIGRATION = '''"""Records each template build (soak {marker})."""
import json
import os
import time

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    event = {{"label": os.environ["SOAK_LABEL"], "pid": os.getpid(), "t": time.time()}}
    event["worker"] = os.environ.get("PYTEST_XDIST_WORKER", "controller")
    fd = os.open(os.environ["SOAK_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps({{**event, "event": "build"}}) + "\\n").encode())
    finally:
        os.close(fd)
    time.sleep({build_seconds})  # a build window wide enough for a SIGKILL to land in
'''

INI = """[pytest]
pgtemplate_url = {url}
pgtemplate_project = {project}
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
"""


def make_project(
    directory: Path, *, url: str, project: str, marker: str, tests: str, build_seconds: float
) -> Path:
    """One simulated machine's checkout; ``marker`` makes the migrations (and template) new."""
    directory.mkdir(parents=True)
    shutil.copy(REPO / "alembic.ini", directory / "alembic.ini")
    shutil.copytree(
        REPO / "migrations", directory / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    migration = COUNTING_MIGRATION.format(marker=marker, build_seconds=build_seconds)
    (directory / "migrations/versions/0004_soak.py").write_text(migration)
    (directory / "conftest.py").write_text(CONFTEST)
    (directory / "test_soak.py").write_text(tests)
    (directory / "pytest.ini").write_text(INI.format(url=url, project=project))
    return directory


def short_tests(count: int) -> str:
    return SHORT_TESTS.format(tests=count)


def live_tests(count: int, sleep: float) -> str:
    return LIVE_TESTS.format(tests=count, sleep=sleep)
