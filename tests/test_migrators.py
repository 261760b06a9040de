"""Migrators called directly against real databases: trust, alembic paths, errors, fingerprints.

Each test creates its own ``pgtemplate_test_<uuid>`` databases on the test server and drops
them when it ends, pass or fail; the alembic projects are real ones written into tmp_path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

from pytest_pgtemplate.errors import ConfigurationError, MigrationError
from pytest_pgtemplate.fingerprint import hash_parts
from pytest_pgtemplate.migrators import AlembicMigrator, CallableMigrator, MetadataMigrator

REPO = Path(__file__).resolve().parent.parent
STOCK_LOCATION = "script_location = %(here)s/migrations"
STOCK_URL = "sqlalchemy.url = postgresql+asyncpg://postgres@127.0.0.1:5432/shop"
READS_DATABASE_URL = (
    "config = context.config\n"
    "import os\n"
    'if os.environ.get("DATABASE_URL"):\n'
    '    config.set_main_option("sqlalchemy.url", os.environ["DATABASE_URL"])\n'
)

NewDatabase = Callable[[], URL]


@pytest.fixture
def base_url(request: pytest.FixtureRequest) -> URL:
    """The harness's server when it offers one, else PGTEMPLATE_TEST_URL (or the default)."""
    try:
        raw = str(request.getfixturevalue("server_url"))
    except pytest.FixtureLookupError:
        raw = os.environ.get("PGTEMPLATE_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    return make_url(raw).set(drivername="postgresql")


@pytest.fixture
def new_database(base_url: URL) -> Iterator[NewDatabase]:
    """Empty databases of this test's own; all dropped at the end, whatever happened."""
    created: list[str] = []
    admin_dsn = base_url.render_as_string(hide_password=False)

    def make() -> URL:
        name = f"pgtemplate_test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return base_url.set(database=name)

    yield make
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """alembic prepends prepend_sys_path to sys.path; keep that inside the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def tables_in(url: URL) -> set[str]:
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        return {row[0] for row in rows}


def alembic_project(
    root: Path, location: str = "%(here)s/migrations", url: str = "", env_py: str = ""
) -> Path:
    """The repository's example project (async env.py, revisions 0001-0003) under ``root``.

    ``location`` replaces script_location, ``url`` sqlalchemy.url; ``env_py`` replaces
    ``config = context.config`` in env.py (to make env.py misbehave as real ones do)."""
    scripts = root / "migrations"
    shutil.copytree(REPO / "migrations", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    if env_py:
        env = scripts / "env.py"
        env.write_text(env.read_text().replace("config = context.config\n", env_py))
    text = (REPO / "alembic.ini").read_text()
    text = text.replace(STOCK_LOCATION, f"script_location = {location}")
    if url:
        text = text.replace(STOCK_URL, f"sqlalchemy.url = {url}")
    ini = root / "alembic.ini"
    ini.write_text(text)
    return ini


# --- trust: the template must hold what the migrator built ---------------------------------


def test_env_py_that_reads_database_url_is_caught_before_the_template_is_trusted(
    tmp_path: Path, new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = alembic_project(tmp_path, env_py=READS_DATABASE_URL)
    template, elsewhere = new_database(), new_database()
    monkeypatch.setenv(
        "DATABASE_URL", elsewhere.set(drivername="postgresql+asyncpg").render_as_string(False)
    )
    migrator = AlembicMigrator(ini)
    migrator.migrate(template)  # "succeeds": alembic migrated the other database
    assert "public.product" in tables_in(elsewhere)
    assert tables_in(template) == set()
    with pytest.raises(MigrationError) as caught:
        migrator.verify(template)
    message = str(caught.value)
    assert "has no alembic version table instead of the head 0003" in message
    assert "the migrations ran somewhere else" in message
    assert "your env.py reads DATABASE_URL" in message
    assert "pgtemplate_export_env = DATABASE_URL" in message
    assert "config.get_main_option('sqlalchemy.url')" in message


def test_exported_database_url_makes_the_same_env_py_migrate_the_template(
    tmp_path: Path, new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = alembic_project(tmp_path, env_py=READS_DATABASE_URL)
    template, elsewhere = new_database(), new_database()
    monkeypatch.setenv(
        "DATABASE_URL", elsewhere.set(drivername="postgresql+asyncpg").render_as_string(False)
    )
    migrator = AlembicMigrator(ini, export_env=("DATABASE_URL",))
    migrator.migrate(template)
    verified = migrator.verify(template)
    assert verified.alembic_heads == ("0003",)
    assert verified.marker_text == "0003"
    assert verified.tables >= 6
    assert migrator.heads_match("0003")
    assert not migrator.heads_match("0002")
    assert tables_in(elsewhere) == set()
    assert os.environ["DATABASE_URL"].endswith(str(elsewhere.database)), "restored afterwards"


def test_template_behind_the_head_is_not_trusted(tmp_path: Path, new_database: NewDatabase) -> None:
    ini = alembic_project(tmp_path)
    template = new_database()
    migrator = AlembicMigrator(ini)
    migrator.migrate(template)
    (tmp_path / "migrations/versions/0004_more.py").write_text(
        'revision = "0004"\ndown_revision = "0003"\n\n\ndef upgrade() -> None:\n    pass\n'
    )
    assert migrator.expected_heads() == ("0004",)
    with pytest.raises(
        MigrationError, match=r"holds alembic revision\(s\) 0003 instead of the head 0004"
    ):
        migrator.verify(template)


def test_empty_callable_template_is_rejected_unless_allowed(
    tmp_path: Path, new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / f"builder_{uuid.uuid4().hex[:8]}"
    package.mkdir()
    (package / "__init__.py").write_text("def build(url):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    template = new_database()
    migrator = CallableMigrator(f"{package.name}:build", rootdir=tmp_path)
    migrator.migrate(template)
    with pytest.raises(MigrationError, match=r"is empty .*: it probably built the schema in"):
        migrator.verify(template)
    dsn = template.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42'")
    assert migrator.verify(template).tables == 0, "a schema of functions only is a schema"


def test_callable_running_alembic_is_checked_against_the_known_heads(
    tmp_path: Path, new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = alembic_project(tmp_path)
    package = tmp_path / f"runner_{uuid.uuid4().hex[:8]}"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from alembic import command\nfrom alembic.config import Config\n\n\n"
        "def build(url):\n"
        f"    config = Config({str(ini)!r})\n"
        '    config.set_main_option("sqlalchemy.url", url)\n'
        '    command.upgrade(config, "0002")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    template = new_database()
    migrator = CallableMigrator(f"{package.name}:build", rootdir=tmp_path, alembic_ini=ini)
    migrator.migrate(template)
    with pytest.raises(
        MigrationError, match=r"holds alembic revision\(s\) 0002 instead of the head 0003"
    ):
        migrator.verify(template)
    assert migrator.heads_match(""), "a callable whose template has no alembic table is trusted"
    assert not migrator.heads_match("0002")


# --- alembic paths as alembic reads them ---------------------------------------------------


def test_relative_script_location_works_from_another_cwd(
    tmp_path: Path,
    new_database: NewDatabase,
    monkeypatch: pytest.MonkeyPatch,
    restore_sys_path: None,
) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    ini = alembic_project(tmp_path / "proj", location="migrations")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(CommandError, match="Path doesn't exist"):
        command.upgrade(Config(str(ini)), "heads")  # alembic alone, from this cwd: what users hit
    template = new_database()
    migrator = AlembicMigrator(ini)
    assert migrator.fingerprint_parts()[1][0] == "migrations/env.py"
    migrator.migrate(template)
    assert migrator.verify(template).alembic_heads == ("0003",)


def test_package_path_script_location_for_fingerprint_and_upgrade(
    tmp_path: Path,
    new_database: NewDatabase,
    monkeypatch: pytest.MonkeyPatch,
    restore_sys_path: None,
) -> None:
    top = f"myapp_{uuid.uuid4().hex[:8]}"
    server = tmp_path / "src" / top / "server"
    server.mkdir(parents=True)
    imported = tmp_path / "imported"
    (server.parent / "__init__.py").write_text(f"open({str(imported)!r}, 'w').close()\n")
    (server / "__init__.py").write_text("")
    alembic_project(server)  # migrations/ inside the package
    ini = tmp_path / "alembic.ini"
    text = (server / "alembic.ini").read_text()
    ini.write_text(text.replace("%(here)s/migrations", f"{top}.server:migrations"))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    migrator = AlembicMigrator(ini)
    assert migrator.scripts.script_directory() == server / "migrations"
    assert migrator.expected_heads() == ("0003",)
    assert migrator.fingerprint_parts()
    assert not imported.exists(), "finding the scripts must not run the project's package"
    template = new_database()
    migrator.migrate(template)
    assert migrator.verify(template).alembic_heads == ("0003",)


def test_package_path_found_through_relative_prepend_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = f"svc_{uuid.uuid4().hex[:8]}"
    alembic_project(tmp_path / "src" / top)
    (tmp_path / "src" / top / "__init__.py").write_text("")
    ini = tmp_path / "alembic.ini"
    text = (tmp_path / "src" / top / "alembic.ini").read_text()
    text = text.replace("%(here)s/migrations", f"{top}:migrations")
    ini.write_text(text.replace("prepend_sys_path = .", "prepend_sys_path = src"))
    monkeypatch.chdir("/")
    assert AlembicMigrator(ini).scripts.script_directory() == tmp_path / "src" / top / "migrations"


def test_missing_script_location_says_what_it_resolved(tmp_path: Path) -> None:
    ini = alembic_project(tmp_path, location="nowhere")
    with pytest.raises(ConfigurationError, match=r"'nowhere'.*is not a directory: resolved to"):
        AlembicMigrator(ini).fingerprint_parts()


# --- first run just works, and setup problems say so ---------------------------------------


def test_alembic_init_placeholder_url_becomes_asyncpg(
    tmp_path: Path, new_database: NewDatabase
) -> None:
    ini = alembic_project(tmp_path, url="driver://user:pass@localhost/dbname")
    template = new_database()
    migrator = AlembicMigrator(ini)
    assert migrator.url_for_env(template).startswith("postgresql+asyncpg://")
    migrator.migrate(template)
    assert migrator.verify(template).alembic_heads == ("0003",)


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://"),
        ("postgresql://u@h/d", "postgresql://"),
        ("sqlite:///app.db", "postgresql+asyncpg://"),
        ("${DATABASE_URL}", "postgresql+asyncpg://"),
    ],
)
def test_configured_driver_is_kept_only_when_it_is_postgresql(
    tmp_path: Path, configured: str, expected: str
) -> None:
    migrator = AlembicMigrator(alembic_project(tmp_path, url=configured))
    target = make_url("postgresql://postgres@127.0.0.1:5432/t")
    assert migrator.url_for_env(target).startswith(expected)


def test_import_error_in_env_py_is_a_setup_problem(
    tmp_path: Path, new_database: NewDatabase
) -> None:
    ini = alembic_project(tmp_path, env_py="config = context.config\nimport no_such_module_xyz\n")
    with pytest.raises(MigrationError) as caught:
        AlembicMigrator(ini).migrate(new_database())
    message = str(caught.value)
    assert "ModuleNotFoundError: No module named 'no_such_module_xyz'" in message
    assert "import or configuration problem, not a failing migration" in message
    assert "prepend_sys_path" in message
    assert "fix the migration" not in message


@pytest.mark.parametrize("where", ["no server", "no such database"])
def test_env_py_that_cannot_connect_is_a_configuration_problem(
    tmp_path: Path, new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Its own URL (the app's settings) points elsewhere: nothing migrated, nothing to fix there."""
    template = new_database()
    elsewhere = (
        template.set(host="127.0.0.1", port=1)
        if where == "no server"
        else template.set(database=f"pgtemplate_missing_{uuid.uuid4().hex[:8]}")
    )
    monkeypatch.setenv(
        "DATABASE_URL", elsewhere.set(drivername="postgresql+asyncpg").render_as_string(False)
    )
    ini = alembic_project(tmp_path, env_py=READS_DATABASE_URL)
    with pytest.raises(MigrationError) as caught:
        AlembicMigrator(ini).migrate(template)
    message = str(caught.value)
    assert message.startswith("alembic could not connect: "), message
    assert "not a failing migration: nothing was migrated" in message
    assert "pgtemplate_export_env = DATABASE_URL" in message
    assert "fix the migration" not in message


def test_missing_driver_names_the_driver_and_sqlalchemy_url(
    tmp_path: Path, new_database: NewDatabase
) -> None:
    ini = alembic_project(tmp_path, url="postgresql+pg8000://u@h/d")
    pytest.importorskip("alembic")
    if "pg8000" in sys.modules or shutil.which("pg8000"):
        pytest.skip("pg8000 is installed here")
    with pytest.raises(MigrationError) as caught:
        AlembicMigrator(ini).migrate(new_database())
    message = str(caught.value)
    assert "The database driver 'pg8000' is not installed" in message
    assert "sqlalchemy.url" in message
    assert "fix the migration" not in message


def test_missing_env_py_is_a_configuration_problem(
    tmp_path: Path, new_database: NewDatabase
) -> None:
    ini = alembic_project(tmp_path)
    (tmp_path / "migrations/env.py").unlink()
    with pytest.raises(MigrationError, match=r"there is no env\.py in .*configuration problem"):
        AlembicMigrator(ini).migrate(new_database())


def test_failing_migration_still_names_the_revision(
    tmp_path: Path, new_database: NewDatabase
) -> None:
    ini = alembic_project(tmp_path)
    (tmp_path / "migrations/versions/0004_broken.py").write_text(
        'from alembic import op\n\nrevision = "0004"\ndown_revision = "0003"\n\n\n'
        "def upgrade() -> None:\n    op.execute('ALTER TABLE no_such_table ADD COLUMN x int')\n"
    )
    with pytest.raises(MigrationError, match=r"migration 0004 \(.*0004_broken.py\) failed: Undef"):
        AlembicMigrator(ini).migrate(new_database())


def test_env_py_needing_an_anyio_worker_thread_points_to_pgtemplate_migrate(
    tmp_path: Path, new_database: NewDatabase
) -> None:
    # anyio is not installed here: raise what anyio.from_thread.run raises outside its threads
    anyio_like = (
        "config = context.config\n"
        "class NoEventLoopError(RuntimeError):\n    pass\n"
        "raise NoEventLoopError('Not running inside an AnyIO worker thread, and no event loop "
        "token was provided')\n"
    )
    ini = alembic_project(tmp_path, env_py=anyio_like)
    with pytest.raises(MigrationError) as caught:
        AlembicMigrator(ini).migrate(new_database())
    message = str(caught.value)
    assert "only works inside an AnyIO worker thread" in message
    assert "pgtemplate_migrate = 'package.module:function'" in message


# --- fingerprints that follow the migrations -------------------------------------------------


def _callable_project(root: Path) -> tuple[str, Path]:
    """A project whose tests package holds the builder, and whose migrations live apart."""
    ini = alembic_project(root)
    tests = root / f"tests_{uuid.uuid4().hex[:8]}"
    tests.mkdir()
    (tests / "__init__.py").write_text("")
    (tests / "db.py").write_text("def build(url):\n    pass\n")
    (tests / "test_api.py").write_text("def test_api():\n    pass\n")
    return f"{tests.name}.db:build", ini


def test_declared_paths_follow_migrations_not_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = _callable_project(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    migrator = CallableMigrator(spec, rootdir=tmp_path, fingerprint_paths=("migrations/**/*.py",))
    first = hash_parts(migrator.fingerprint_parts())
    test_file = tmp_path / spec.split(".")[0] / "test_api.py"
    test_file.write_text(test_file.read_text() + "\n# edited test\n")
    assert hash_parts(migrator.fingerprint_parts()) == first, "editing a test must not rebuild"
    migration = tmp_path / "migrations/versions/0002_categories_and_orders.py"
    migration.write_text(migration.read_text() + "\n# edited migration\n")
    assert hash_parts(migrator.fingerprint_parts()) != first, "editing a migration must rebuild"
    assert migrator.fingerprint_note().startswith("fingerprint: 4 file(s) of fingerprint_paths")


def test_undeclared_callable_hashes_its_package_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, ini = _callable_project(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    migrator = CallableMigrator(spec, rootdir=tmp_path)
    note = migrator.fingerprint_note()
    assert f"3 .py file(s) under {tmp_path / spec.split('.')[0]}" in note
    assert "WARNING: a change elsewhere" in note
    first = hash_parts(migrator.fingerprint_parts())
    migration = tmp_path / "migrations/versions/0003_seed_categories.py"
    migration.write_text(migration.read_text() + "\n# edited\n")
    assert hash_parts(migrator.fingerprint_parts()) == first, "the stale case the note warns of"
    with_ini = CallableMigrator(spec, rootdir=tmp_path, alembic_ini=ini)
    before = hash_parts(with_ini.fingerprint_parts())
    migration.write_text(migration.read_text() + "\n# edited again\n")
    assert hash_parts(with_ini.fingerprint_parts()) != before, "a known alembic.ini is covered"
    assert with_ini.expected_heads() == ("0003",)


def test_declared_path_matching_nothing_is_an_error(tmp_path: Path) -> None:
    migrator = CallableMigrator("x:y", rootdir=tmp_path, fingerprint_paths=("migrashuns",))
    with pytest.raises(ConfigurationError, match="'migrashuns' matches no file under"):
        migrator.fingerprint_parts()


def test_expected_heads_agree_with_alembic_for_merges_and_annotations(tmp_path: Path) -> None:
    ini = alembic_project(tmp_path)
    versions = tmp_path / "migrations/versions"
    (versions / "0004_a.py").write_text('revision: str = "0004a"\ndown_revision = "0003"\n')
    (versions / "0004_b.py").write_text("revision = '0004b'\ndown_revision: str | None = '0003'\n")
    migrator = AlembicMigrator(ini)
    assert migrator.expected_heads() == ("0004a", "0004b") == migrator.authoritative_heads()
    (versions / "0005_merge.py").write_text(
        'revision = "0005"\ndown_revision = (\n    "0004a",\n    "0004b",\n)\n'
    )
    assert migrator.expected_heads() == ("0005",) == migrator.authoritative_heads()


def test_reusing_a_template_does_not_import_alembic(tmp_path: Path) -> None:
    ini = alembic_project(tmp_path)
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pytest_pgtemplate.migrators import AlembicMigrator\n"
        "started = time.perf_counter()\n"
        f"m = AlembicMigrator(Path({str(ini)!r}))\n"
        "m.fingerprint_parts(); m.heads_match('0003')\n"
        "print(round((time.perf_counter() - started) * 1000, 2), 'alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == "False", out.stdout


# --- pgtemplate_metadata ---------------------------------------------------------------------

MODELS = """
import enum
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Color(enum.Enum):
    red = "red"
    blue = "blue"


class Item(Base):
    __tablename__ = "item"
    __table_args__ = {"schema": "inventory"}
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), index=True)
    color: Mapped[Color] = mapped_column(sa.Enum(Color, name="color"))


class Note(Base):
    __tablename__ = "note"
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(sa.ForeignKey("inventory.item.id"))
"""


def _metadata_fingerprint(root: Path, module: str, source: str) -> str:
    (root / f"{module}.py").write_text(source)
    sys.modules.pop(module, None)
    return hash_parts(MetadataMigrator(f"{module}:Base.metadata").fingerprint_parts())


def test_metadata_fingerprint_changes_only_with_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"models_{uuid.uuid4().hex[:8]}"
    monkeypatch.syspath_prepend(str(tmp_path))
    first = _metadata_fingerprint(tmp_path, module, MODELS)
    edited = MODELS + "\n\ndef helper():\n    return 'not part of the schema'\n"
    assert _metadata_fingerprint(tmp_path, module, edited) == first
    column = MODELS.replace(
        "name: Mapped[str] = mapped_column(sa.String(50), index=True)",
        "name: Mapped[str] = mapped_column(sa.String(80), index=True)",
    )
    assert _metadata_fingerprint(tmp_path, module, column) != first
    enum_value = MODELS.replace('blue = "blue"', 'blue = "blue"\n    green = "green"')
    assert _metadata_fingerprint(tmp_path, module, enum_value) != first
    sys.modules.pop(module, None)


def test_metadata_builds_schemas_tables_and_is_verified(
    tmp_path: Path, new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    template = new_database()
    migrator = MetadataMigrator(f"{module}:Base.metadata")
    migrator.migrate(template)
    assert tables_in(template) == {"inventory.item", "public.note"}
    assert migrator.verify(template).alembic_heads is None
    assert (
        migrator.fingerprint_note()
        == f"fingerprint: compiled DDL of {module}:Base.metadata (2 table(s))"
    )


def test_metadata_spec_errors_name_the_expected_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ConfigurationError,
        match=r"is not a SQLAlchemy MetaData .*expected e\.g\. 'models_.*:Base\.metadata'",
    ):
        MetadataMigrator(f"{module}:Base").metadata()
    with pytest.raises(ConfigurationError, match="cannot be loaded: AttributeError"):
        MetadataMigrator(f"{module}:Base.metdata").metadata()


# --- end to end, through the plugin ------------------------------------------------------------


def test_inner_run_with_env_py_reading_database_url_fails_then_passes_with_export(
    project: Any, new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's story: tests fail with the cause named, no empty template is left to reuse,
    and ``pgtemplate_export_env = DATABASE_URL`` fixes it."""
    env = project.path / "migrations/env.py"
    env.write_text(env.read_text().replace("config = context.config\n", READS_DATABASE_URL))
    elsewhere = new_database()
    url = elsewhere.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    project.write_tests("async def test_uses_db(pg_database):\n    pass\n")
    failed = project.run()
    failed.assert_outcomes(errors=1)
    failed.stdout.fnmatch_lines(["*the migrations ran somewhere else*DATABASE_URL*"])
    assert "public.product" in tables_in(elsewhere), "what the failing build really did"
    ini = next(
        project.path / name for name in ("tox.ini", "pytest.ini") if (project.path / name).exists()
    )
    ini.write_text(
        ini.read_text().replace("[pytest]\n", "[pytest]\npgtemplate_export_env = DATABASE_URL\n")
    )
    project.run().assert_outcomes(passed=1)
    assert project.migrations_run() == 2, "once into the other database, once into the template"
