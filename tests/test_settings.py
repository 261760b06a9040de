"""Settings precedence and validation, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pgtemplate import ConfigurationError
from pytest_pgtemplate.naming import DatabaseTag, worker_database_name
from pytest_pgtemplate.settings import OPTIONS, Option, resolve, unknown_names
from pytest_pgtemplate.urls import check_url


def _lookup(cli: dict[str, str | bool], ini: dict[str, str]):  # type: ignore[no-untyped-def]
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


def test_a_negated_flag_beats_env_and_ini(tmp_path: Path) -> None:
    ini, env = {"keep_failed": "true"}, {"PGTEMPLATE_KEEP_FAILED": "yes"}
    negated = resolve(_lookup({"keep_failed": False}, ini), env, tmp_path)
    assert negated.keep_failed is False
    assert negated.sources["keep_failed"].source == "cli"
    given = resolve(_lookup({"keep_failed": True}, {"keep_failed": "off"}), {}, tmp_path)
    assert given.keep_failed is True
    assert resolve(_lookup({}, ini), env, tmp_path).keep_failed is True


@pytest.mark.parametrize(
    ("spelling", "meaning"),
    [(word, True) for word in ("true", "yes", "on", "1", "TRUE")]
    + [(word, False) for word in ("false", "no", "off", "0", " No ")],
)
def test_flags_accept_every_spelling_of_a_boolean(
    spelling: str, meaning: bool, tmp_path: Path
) -> None:
    from_ini = resolve(_lookup({}, {"keep_failed": spelling}), {}, tmp_path)
    from_env = resolve(_lookup({}, {}), {"PGTEMPLATE_KEEP_FAILED": spelling}, tmp_path)
    assert from_ini.keep_failed is from_env.keep_failed is meaning


def test_a_bad_boolean_lists_every_spelling(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        resolve(_lookup({}, {}), {"PGTEMPLATE_KEEP_FAILED": "maybe"}, tmp_path)
    assert str(raised.value) == (
        "pgtemplate_keep_failed must be a boolean, one of true/false/yes/no/on/off/1/0 "
        "(got 'maybe' from env PGTEMPLATE_KEEP_FAILED)"
    )
    with pytest.raises(ConfigurationError, match=r"1/0 \(got 'sometimes'\)$"):
        resolve(_lookup({}, {"keep_failed": "sometimes"}), {}, tmp_path)


def test_archive_dir_is_a_path_from_the_rootdir(tmp_path: Path) -> None:
    option = next(option for option in OPTIONS if option.name == "archive_dir")
    assert (option.ini, option.cli, option.env_var) == (
        "pgtemplate_archive_dir",
        "--pgtemplate-archive-dir",
        "PGTEMPLATE_ARCHIVE_DIR",
    )
    assert len(OPTIONS) <= 14
    assert resolve(_lookup({}, {}), {}, tmp_path).archive_dir is None
    relative = resolve(_lookup({}, {"archive_dir": "ci/templates"}), {}, tmp_path)
    assert relative.archive_dir == tmp_path / "ci/templates"
    home = resolve(_lookup({"archive_dir": "~/tpl"}, {}), {}, tmp_path)
    assert home.archive_dir == Path.home() / "tpl"
    env = {"PGTEMPLATE_ARCHIVE_DIR": "/var/cache/tpl"}
    assert resolve(_lookup({}, {}), env, tmp_path).archive_dir == Path("/var/cache/tpl")


def test_typos_name_the_setting_meant() -> None:
    notes = unknown_names(
        ["pgtemplate_ulr", "pgtemplate_url", "pg_template_reset", "timeout", "pgtemplate_zzz"],
        ["PGTEMPLATE_URI", "PGTEMPLATE_URL", "PGTEMPLATE_TEST_URL", "PGTEMPLATE_TEST_PG_BINARIES"],
        registered=lambda key: key == "pgtemplate_zzz",  # another plugin's, say
        ini_file="tox.ini",
    )
    assert notes == [
        "pgtemplate_ulr in tox.ini is not a pytest-pgtemplate setting, so it is ignored; "
        "did you mean pgtemplate_url?",
        "pg_template_reset in tox.ini is not a pytest-pgtemplate setting, so it is ignored; "
        "did you mean pgtemplate_reset?",
        "environment variable PGTEMPLATE_URI is not a pytest-pgtemplate setting, so it is "
        "ignored; did you mean PGTEMPLATE_URL?",
    ]
    [far] = unknown_names([], ["PGTEMPLATE_QQQQQQQQQQQQ"], registered=lambda key: False)
    assert "expected one of PGTEMPLATE_URL, PGTEMPLATE_ALEMBIC_INI," in far
    removed = unknown_names(["pgtemplate_fresh_server"], ["PGTEMPLATE_DURABLE"], lambda key: False)
    assert removed == [
        "pgtemplate_fresh_server in the ini file is a setting that was removed (`pgtemplate "
        "cache clean` gives the next run a fresh server), so it is ignored",
        "environment variable PGTEMPLATE_DURABLE is a setting that was removed (worker "
        "databases never need durability), so it is ignored",
    ]
    assert unknown_names([], ["PGTEMPLATE_EXPORT_ENV"], lambda key: False) == [
        "environment variable PGTEMPLATE_EXPORT_ENV is ignored: pgtemplate_export_env is read "
        "from the ini or --pgtemplate-export-env only"
    ]


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("postgresql://postgres@127.0.0.1:abc/postgres", "abc"),
        ("postgresql://postgres@127.0.0.1:0/postgres", "0"),
        ("postgresql://postgres@127.0.0.1:99999/postgres", "99999"),
        ("postgresql+asyncpg://u:secret@h1:5432,h2:x1/db", "x1"),
        ("postgresql:///db?host=/tmp&port=65536", "65536"),
    ],
)
def test_a_bad_port_is_named(url: str, port: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        check_url(url, "--url")
    message = str(raised.value)
    assert message.startswith("--url 'postgresql")
    assert message.endswith(
        f"has a bad port: expected a number from 1 to 65535, e.g. 5432 (got {port!r})"
    )
    assert "secret" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "postgresql://postgres@127.0.0.1/postgres",
        "postgresql://[::1]:65535/postgres",
        "postgresql://[::1]/postgres",
        "postgresql://h:/postgres",
        "postgresql://h1:1,h2:5433/postgres",
        "postgresql:///postgres?host=/tmp&port=5432",
    ],
)
def test_good_ports_pass(url: str) -> None:
    check_url(url)
