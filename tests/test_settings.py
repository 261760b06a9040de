"""Settings precedence and validation, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pgtemplate import ConfigurationError
from pytest_pgtemplate.naming import DatabaseTag, worker_database_name
from pytest_pgtemplate.settings import Option, resolve


def _lookup(cli: dict[str, str], ini: dict[str, str]):  # type: ignore[no-untyped-def]
    def lookup(option: Option) -> tuple[str | bool | None, str | None]:
        return cli.get(option.name), ini.get(option.name)

    return lookup


def test_cli_beats_env_beats_ini_beats_default(tmp_path: Path) -> None:
    ini = {"url": "postgresql://ini/postgres", "reset": "truncate-all", "lock_timeout": "5"}
    env = {"PGTEMPLATE_URL": "postgresql://env/postgres", "PGTEMPLATE_LOCK_TIMEOUT": "7"}
    settings = resolve(_lookup({"url": "postgresql://cli/postgres"}, ini), env, tmp_path)
    assert settings.url.value == "postgresql://cli/postgres"
    assert settings.sources["url"].source == "cli"
    assert settings.lock_timeout == 7
    assert settings.sources["lock_timeout"].source == "env PGTEMPLATE_LOCK_TIMEOUT"
    assert settings.sources["reset"].source == "ini"
    assert settings.sources["keep_templates"].source == "default"
    assert settings.alembic_ini == tmp_path / "alembic.ini"


def test_export_env_accepts_spaces_and_commas(tmp_path: Path) -> None:
    settings = resolve(_lookup({}, {"export_env": "DATABASE_URL, DB_URL  OTHER"}), {}, tmp_path)
    assert settings.export_env == ("DATABASE_URL", "DB_URL", "OTHER")
    with pytest.raises(ConfigurationError, match="environment variable names"):
        resolve(_lookup({}, {"export_env": "NOT-A-NAME"}), {}, tmp_path)


def test_a_builder_keeps_only_an_alembic_ini_that_exists(tmp_path: Path) -> None:
    settings = resolve(_lookup({}, {"migrate": "app.db:create_all"}), {}, tmp_path)
    assert settings.migrate == "app.db:create_all"
    assert settings.alembic_ini is None
    (tmp_path / "alembic.ini").write_text("[alembic]\n")
    settings = resolve(_lookup({}, {"migrate": "app.db:create_all"}), {}, tmp_path)
    assert settings.alembic_ini == tmp_path / "alembic.ini", "its heads are checked"
    with pytest.raises(ConfigurationError, match="either pgtemplate_migrate or pgtemplate_meta"):
        resolve(_lookup({}, {"migrate": "a:b", "metadata": "a:Base.metadata"}), {}, tmp_path)


def test_an_empty_cli_value_clears_the_ini_value(tmp_path: Path) -> None:
    settings = resolve(_lookup({"migrate": ""}, {"migrate": "app.db:create_all"}), {}, tmp_path)
    assert settings.migrate is None
    assert settings.alembic_ini == tmp_path / "alembic.ini"


def test_project_defaults_to_the_pyproject_name_else_the_rootdir(tmp_path: Path) -> None:
    assert resolve(_lookup({}, {}), {}, tmp_path).project == tmp_path.name
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "shop-api"\n')
    assert resolve(_lookup({}, {}), {}, tmp_path).project == "shop-api"
    given = resolve(_lookup({}, {"project": "other"}), {}, tmp_path)
    assert given.project == "other"


def test_worker_names_fit_postgres_identifiers() -> None:
    name = worker_database_name("0123456789ab", "gw" + "9" * 40)
    assert len(name) <= 63
    assert name.startswith("pgtemplate_0123456789ab_gw")


def test_markers_round_trip_and_foreign_comments_are_ignored() -> None:
    marker = DatabaseTag("worker", run_id="abc", template="pgtemplate_tpl_x")
    assert DatabaseTag.from_comment(marker.to_comment()) == marker
    assert DatabaseTag.from_comment("production database, do not touch") is None
    assert DatabaseTag.from_comment('{"pgtemplate": {"bogus": 1}}') is None
