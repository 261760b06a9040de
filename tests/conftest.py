"""Harness for the plugin's own tests: inner pytest runs against a real server.

Every inner project gets migrations of its own (a unique file), hence a template of its own;
whatever databases a test creates are dropped when it ends, pass or fail. That clean-up diffs
the server's list of plugin databases, so this suite runs without xdist (its inner runs use it).
"""

from __future__ import annotations

import os
import shutil
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("PGTEMPLATE_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

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


def plugin_databases(conn: psycopg.Connection) -> set[str]:
    """Databases the plugin made (they carry its marker), whoever's test made them."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'pgtemplate\\_%'"
        " AND shobj_description(oid, 'pg_database') LIKE '{\"pgtemplate\": %'"
    )
    return {row[0] for row in rows}


def drop_database(conn: psycopg.Connection, name: str) -> None:
    """Tolerates a database that went away meanwhile (its own run dropped it)."""
    try:
        conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
    except psycopg.errors.InvalidCatalogName:
        return
    except psycopg.errors.ObjectNotInPrerequisiteState:
        pass  # an interrupted DROP left it invalid: dropping it again finishes the job
    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def admin() -> Iterator[psycopg.Connection]:
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        yield conn


@dataclass
class InnerProject:
    """A user's project inside pytester's directory: alembic.ini, migrations, tests."""

    pytester: pytest.Pytester
    admin: psycopg.Connection

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
        lines = [f"{key} = {value}" for key, value in settings.items()]
        self.pytester.makeini("[pytest]\n" + "\n".join(lines) + "\n")

    def write_tests(self, source: str, name: str = "test_inner") -> None:
        self.pytester.makepyfile(**{name: textwrap.dedent(source)})

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
    pytester: pytest.Pytester, admin: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InnerProject]:
    for name in [name for name in os.environ if name.startswith("PGTEMPLATE_")]:
        monkeypatch.delenv(name)  # the inner project's own ini must decide
    monkeypatch.setenv("MIGRATION_LOG", str(pytester.path / "migration.log"))
    shutil.copy(REPO / "alembic.ini", pytester.path / "alembic.ini")
    shutil.copytree(
        REPO / "migrations",
        pytester.path / "migrations",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    log_migration = _LOG_MIGRATION.format(marker=uuid.uuid4().hex)
    (pytester.path / "migrations/versions/0004_log.py").write_text(log_migration)
    inner = InnerProject(pytester, admin)
    inner.write_ini(
        pgtemplate_url=SERVER_URL,
        asyncio_mode="auto",
        asyncio_default_fixture_loop_scope="function",
    )
    before = plugin_databases(admin)
    yield inner
    for name in plugin_databases(admin) - before:
        drop_database(admin, name)
