"""Harness for the plugin's own tests: inner pytest runs against a real server.

Each process that runs tests uses the plugin's own server, started here (``_harness``), or the
one ``PGTEMPLATE_TEST_URL`` names. Every inner project gets migrations of its own (a unique
file), hence a template of its own, and a ``pgtemplate_project`` of its own; when a test ends,
pass or fail, exactly the databases of its projects are dropped, never anybody else's, so the
suite runs under ``pytest -n 2`` and on a server other people use.
"""

from __future__ import annotations

import os
import shutil
import signal
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from _harness import ENV_VAR, Owned, SuiteServer, drop_database, new_project_name
from pytest_pgtemplate.server.own import stop_data_dir
from pytest_pgtemplate.urls import redacted

__all__ = [
    "REPO",
    "SERVER_URL",
    "InnerProject",
    "drop_database",
    "own_server",
    "plugin_databases",
]

REPO = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get(ENV_VAR, "")
"""Set by ``pytest_configure`` before any test module is imported; prefer ``server_url``."""

_SUITE: list[SuiteServer] = []

_LOG_MIGRATION = '''
"""Appends a line to $MIGRATION_LOG, so tests can count how often migrations ran. {marker}"""

import os

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with open(os.environ["MIGRATION_LOG"], "a") as log:
        log.write("migrated\\n")


def downgrade() -> None:
    pass
'''


def _runs_tests(config: pytest.Config) -> bool:
    """False in xdist's controller, which imports no test module (the condition xdist uses)."""
    if hasattr(config, "workerinput"):
        return True
    return getattr(config.option, "dist", "no") == "no" or bool(config.option.collectonly)


def _heed_ctrl_c() -> None:
    """Undo an inherited SIG_IGN for SIGINT, so inner runs (which inherit it) obey ctrl-c.

    A shell without job control starts ``cmd &`` with SIGINT ignored, and Python then leaves it
    ignored: the ctrl-c interruption test's inner run never stopped (3 of 3 such runs failed).
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # `timeout`, a cancelled CI job
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM as ctrl-c: pytest then tears fixtures down, so ``project`` drops what it made."""
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    global SERVER_URL  # noqa: PLW0603  (test modules read it at import time)
    _heed_ctrl_c()
    if not _runs_tests(config):
        return
    try:
        suite = SuiteServer.open()
    except Exception as exc:  # the one place to say how to get a server
        raise pytest.UsageError(
            f"the test suite could not start the plugin's own PostgreSQL server: {exc}\n"
            f"Install PostgreSQL's server programs, or set {ENV_VAR} to a server's URL."
        ) from exc
    _SUITE.append(suite)
    SERVER_URL = suite.url
    os.environ[ENV_VAR] = suite.url  # modules and subprocesses that read the variable agree


SMOKE = (
    "test_first_run.py::test_alembic_init_async_and_the_quick_start_pass_on_the_first_run",
    "test_core.py::test_migrations_run_once_and_each_worker_has_its_own_database",
    "test_reset.py::test_random_work_is_undone_exactly[superuser]",
    "test_reset.py::test_schema_change_is_detected_and_rows_are_left_alone[comment on table]",
    "test_chain.py::test_a_conftest_pg_database_redirects_engines_and_sessions",
    "test_chain.py::test_connections_start_every_test_clean[restore]",
    "test_strategies.py::test_exact_strategies_restore_seed_rows_and_sequences[rollback]",
    "test_sync.py::test_sync_fixtures_are_reset_exactly[restore]",
    "test_inert.py::test_a_suite_without_database_tests_loads_nothing",
    "test_own_server_security.py",
)
"""``-m smoke``: one test of each part, a minute's worth, chosen here rather than in the modules."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.nodeid.removeprefix("tests/").startswith(each) for each in SMOKE):
            item.add_marker(pytest.mark.smoke)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _SUITE:
        _SUITE.pop().close()


def own_server() -> bool:
    """The tests run on a server this process started (nobody else writes to it)."""
    return bool(_SUITE) and _SUITE[0].embedded is not None


def pytest_report_header(config: pytest.Config) -> str:
    if not _SUITE:
        return "test server: none started in this process"
    how = "the plugin's own, started for this process" if own_server() else ENV_VAR
    return f"test server: {redacted(make_url(_SUITE[0].url))} ({how})"


def plugin_databases(conn: psycopg.Connection) -> set[str]:
    """Every plugin database on the server, whoever made it: only for asking about known names.

    Never compare or count it (others' runs share the server): use ``InnerProject.databases``.
    """
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'pgtemplate\\_%'"
        " AND shobj_description(oid, 'pg_database') LIKE '{\"pgtemplate\": %'"
    )
    return {row[0] for row in rows}


@pytest.fixture(scope="session")
def server_url() -> str:
    if not SERVER_URL:
        raise RuntimeError("no test server: pytest_configure did not run in this process")
    return SERVER_URL


@pytest.fixture
def cache_dir() -> Iterator[Path]:
    """A cache of its own (on tmpfs like the default); whatever server runs from it is stopped
    afterwards, pass or fail."""
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path("/tmp")
    path = base / f"pgtemplate-test-{uuid.uuid4().hex[:8]}"
    yield path
    for data_dir in path.glob("*/slot*/data"):
        stop_data_dir(data_dir)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def admin(server_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(server_url, autocommit=True) as conn:
        yield conn


@dataclass
class InnerProject:
    """A user's project inside pytester's directory: alembic.ini, migrations, tests."""

    pytester: pytest.Pytester
    admin: psycopg.Connection
    server_url: str
    project: str = field(default_factory=new_project_name)
    """Its ``pgtemplate_project``: every database its runs create names it."""
    owned: Owned = field(default_factory=Owned)

    @property
    def path(self) -> Path:
        return self.pytester.path

    @property
    def migration_log(self) -> Path:
        return self.path / "migration.log"

    def migrations_run(self) -> int:
        if not self.migration_log.exists():
            return 0
        return len(self.migration_log.read_text().splitlines())

    def write_ini(self, **settings: str) -> None:
        """Replaces the ini; ``pgtemplate_project`` stays this project's unless given.

        A test that gives its own must make it unique: its databases are dropped at the end.
        """
        settings = {"pgtemplate_project": self.project, **settings}
        self.owned.projects.add(settings["pgtemplate_project"])
        lines = [f"{key} = {value}" for key, value in settings.items()]
        self.pytester.makeini("[pytest]\n" + "\n".join(lines) + "\n")

    def settings(self) -> dict[str, str]:
        """The inner ini's settings as they are now."""
        lines = (self.path / "tox.ini").read_text().splitlines()[1:]
        return dict(line.split(" = ", 1) for line in lines if " = " in line)

    def add_ini(self, **settings: str) -> None:
        """Keeps the ini's settings (server, project, asyncio) and adds or overrides these."""
        self.write_ini(**{**self.settings(), **settings})

    def write_tests(self, source: str, name: str = "test_inner") -> None:
        self.pytester.makepyfile(**{name: textwrap.dedent(source)})

    def databases(self, kind: str | None = None) -> set[str]:
        """This project's databases on the server (``kind``: template, worker or kept)."""
        found = self.owned.databases(self.admin)
        return {name for name, its_kind in found.items() if kind in (None, its_kind)}

    def own(self, name: str) -> str:
        """A database the test creates by hand: dropped at the end too."""
        self.owned.names.add(name)
        return name

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            "-p",
            "no:benchmark",
            "-p",
            "no:randomly",
            *args,
            timeout=180,
        )


@pytest.fixture
def project(
    pytester: pytest.Pytester,
    admin: psycopg.Connection,
    server_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[InnerProject]:
    for name in [name for name in os.environ if name.startswith("PGTEMPLATE_")]:
        monkeypatch.delenv(name)  # the inner project's own ini must decide
    for name in [name for name in os.environ if name.startswith(("PYTEST_XDIST_", "PYTEST_PGT"))]:
        monkeypatch.delenv(name)  # an inner run is a run of its own, not one of our workers
    monkeypatch.setenv("MIGRATION_LOG", str(pytester.path / "migration.log"))
    shutil.copy(REPO / "alembic.ini", pytester.path / "alembic.ini")
    shutil.copytree(
        REPO / "migrations",
        pytester.path / "migrations",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    log_migration = _LOG_MIGRATION.format(marker=uuid.uuid4().hex)
    (pytester.path / "migrations/versions/0004_log.py").write_text(log_migration)
    inner = InnerProject(pytester, admin, server_url)
    inner.write_ini(
        pgtemplate_url=server_url,
        asyncio_mode="auto",
        asyncio_default_fixture_loop_scope="function",
    )
    try:
        yield inner
    finally:  # a connection of its own: the test may have broken ``admin``
        with psycopg.connect(server_url, autocommit=True) as conn:
            inner.owned.drop_all(conn)
