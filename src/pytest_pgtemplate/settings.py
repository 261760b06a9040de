"""Settings: one table of options, resolved with the precedence CLI > environment > ini > default.

This module does not import pytest: the plugin registers the options it describes, and passes
the raw values in; everything here is plain, testable code.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError
from .urls import export_entries

RESET_STRATEGIES = ("restore", "truncate-all", "rollback", "recreate")
DEFAULT_RESET = "restore"
DEPRECATED_STRATEGIES = {"truncate": "restore"}
"""Old names still accepted, with a warning, for one release (``truncate`` mostly DELETEd)."""


def strategy_name(given: str) -> tuple[str, str | None]:
    """The strategy, and a deprecation note when ``given`` is an old name for it."""
    new = DEPRECATED_STRATEGIES.get(given)
    if new is None:
        return given, None
    return new, (
        f"reset strategy {given!r} is now called {new!r} (it restores the template's state, "
        f"mostly with DELETE); {given!r} will stop working in the next release"
    )


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    default: str = ""
    env: bool = True
    choices: tuple[str, ...] = ()
    flag: bool = False

    @property
    def ini(self) -> str:
        return f"pgtemplate_{self.name}"

    @property
    def cli(self) -> str:
        return "--pgtemplate-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return f"pgtemplate_{self.name}"

    @property
    def env_var(self) -> str | None:
        return f"PGTEMPLATE_{self.name.upper()}" if self.env else None


OPTIONS = (
    Option(
        "url",
        "URL of the server's maintenance database, "
        "e.g. postgresql://postgres@127.0.0.1:5432/postgres.",
    ),
    Option(
        "alembic_ini",
        "alembic config that migrates the template (default: alembic.ini in the rootdir).",
        default="alembic.ini",
    ),
    Option(
        "migrate", "'package.module:function' called with the template's URL, instead of alembic."
    ),
    Option(
        "metadata",
        "'package.module:Base.metadata' whose create_all builds the template, instead of alembic.",
    ),
    Option(
        "reset",
        "how a worker database is put back after each test.",
        default=DEFAULT_RESET,
        choices=RESET_STRATEGIES,
    ),
    Option(
        "export_env",
        "env vars (space or comma separated) set to the worker database's URL "
        "in every worker, e.g. DATABASE_URL.",
        env=False,
    ),
    Option(
        "lock_timeout",
        "seconds to wait for another run or worker that builds the template.",
        default="300",
    ),
    Option(
        "keep_failed",
        "keep a copy of a failing test's database and print its URL.",
        default="false",
        flag=True,
    ),
    Option("bin_dir", "directory with initdb, pg_ctl and postgres for the plugin's own server."),
    Option(
        "cache_dir",
        "where the plugin's own server keeps its data between runs (default: /dev/shm when it "
        "is a tmpfs, else ~/.cache/pytest-pgtemplate); `pgtemplate cache clean` empties it.",
    ),
    Option(
        "archive_dir",
        "directory where built templates are archived and restored from, across CI runs "
        "(e.g. a CI cache).",
    ),
    Option(
        "keep_templates",
        "templates of this project to keep; older unused ones are dropped.",
        default="3",
    ),
    Option(
        "project",
        "name that owns this project's templates on a shared server (default: [project] name "
        "in pyproject.toml, else the rootdir's name).",
    ),
    Option(
        "fingerprint_paths",
        "files, directories or globs (space or comma separated, relative to the rootdir) whose "
        "content decides the template built by pgtemplate_migrate.",
    ),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
_SPELLINGS = ("true", "false", "yes", "no", "on", "off", "1", "0")
BOOLEANS = dict(zip(_SPELLINGS, ("true", "false") * 4, strict=True))
"""Every spelling a flag accepts from the ini and the environment, and what it means."""
SUITE_ENV = ("PGTEMPLATE_TEST_URL", "PGTEMPLATE_TEST_PG_BINARIES")  # the plugin's own tests'
REMOVED = {
    "connect_timeout": "the plugin waits 10 s for the server",
    "leak_grace": "the reset waits 1 s for transactions still open",
    "durable": "worker databases never need durability",
    "fresh_server": "`pgtemplate cache clean` gives the next run a fresh server",
    "allow_empty_template": "only a template without any object of the application's is refused",
}
"""Settings of earlier versions, and what replaced each: named when a config still sets one."""


@dataclass(frozen=True)
class Resolved:
    value: str
    source: str
    """``cli``, ``env PGTEMPLATE_X``, ``ini`` or ``default``: shown in the report header."""


@dataclass(frozen=True)
class Settings:
    url: Resolved
    alembic_ini: Path | None
    migrate: str | None
    metadata: str | None
    reset: str
    export_env: tuple[str, ...]
    lock_timeout: float
    keep_failed: bool
    bin_dir: str | None
    cache_dir: Path | None
    archive_dir: Path | None
    keep_templates: int
    project: str
    fingerprint_paths: tuple[str, ...]
    sources: Mapping[str, Resolved]
    deprecations: tuple[str, ...] = ()


RawLookup = Callable[[Option], tuple[str | bool | None, str | None]]
"""Returns (cli value, ini value) for an option; None where unset (True or False for a flag given
as ``--pgtemplate-x`` or ``--no-pgtemplate-x``)."""


def resolve(lookup: RawLookup, environ: Mapping[str, str], rootdir: Path) -> Settings:
    """Apply precedence and validate every value; raise ConfigurationError naming the fix."""
    sources = {option.name: _resolve_one(option, lookup, environ) for option in OPTIONS}
    value = {name: resolved.value for name, resolved in sources.items()}
    reset, deprecation = strategy_name(value["reset"])
    value["reset"] = reset
    for option in OPTIONS:
        if option.flag and value[option.name] not in ("true", "false"):
            raise ConfigurationError(_boolean_error(option, sources[option.name]))
        if option.choices and value[option.name] not in option.choices:
            raise ConfigurationError(_choice_error(option, value[option.name]))
    return Settings(
        url=sources["url"],
        alembic_ini=_alembic_ini(
            sources["alembic_ini"], value["migrate"] or value["metadata"], rootdir
        ),
        migrate=value["migrate"] or None,
        metadata=_metadata(value["metadata"], value["migrate"]),
        reset=value["reset"],
        deprecations=(deprecation,) if deprecation else (),
        export_env=export_entries(value["export_env"]),
        lock_timeout=_seconds(OPTIONS_BY_NAME["lock_timeout"], value["lock_timeout"]),
        keep_failed=value["keep_failed"] == "true",
        bin_dir=value["bin_dir"] or None,
        cache_dir=_path(value["cache_dir"], rootdir) if value["cache_dir"] else None,
        archive_dir=_path(value["archive_dir"], rootdir) if value["archive_dir"] else None,
        keep_templates=_count(OPTIONS_BY_NAME["keep_templates"], value["keep_templates"]),
        project=value["project"] or default_project(rootdir),
        fingerprint_paths=tuple(p for p in re.split(r"[\s,]+", value["fingerprint_paths"]) if p),
        sources=sources,
    )


def choice_error(option_name: str, got: str) -> str:
    return _choice_error(OPTIONS_BY_NAME[option_name], got)


def default_project(rootdir: Path) -> str:
    """``[project] name`` of the rootdir's pyproject.toml, else the rootdir's own name."""
    try:
        with (rootdir / "pyproject.toml").open("rb") as handle:
            name = tomllib.load(handle).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        name = None
    return name if isinstance(name, str) and name else rootdir.name


def _resolve_one(option: Option, lookup: RawLookup, environ: Mapping[str, str]) -> Resolved:
    cli, ini = lookup(option)
    if cli == "":  # --pgtemplate-x= clears a value from the ini or the environment
        return Resolved(option.default, "cli")
    if isinstance(cli, bool):  # --pgtemplate-x, --no-pgtemplate-x
        return Resolved("true" if cli else "false", "cli")
    if cli is not None:
        return Resolved(str(cli), "cli")
    if option.env_var and environ.get(option.env_var):
        return Resolved(_normal(option, environ[option.env_var]), f"env {option.env_var}")
    if ini not in (None, ""):
        return Resolved(_normal(option, str(ini)), "ini")
    return Resolved(option.default, "default")


def _normal(option: Option, raw: str) -> str:
    """Flags accept the usual spellings of a boolean."""
    if not option.flag:
        return raw
    return BOOLEANS.get(raw.strip().lower(), raw)


def _choice_error(option: Option, got: str) -> str:
    valid = ", ".join(repr(choice) for choice in option.choices)
    return f"{option.ini} must be one of [{valid}] (got {got!r})"


def _boolean_error(option: Option, resolved: Resolved) -> str:
    where = "" if resolved.source == "ini" else f" from {resolved.source}"
    return (
        f"{option.ini} must be a boolean, one of {'/'.join(BOOLEANS)} "
        f"(got {resolved.value!r}{where})"
    )


def _path(raw: str, rootdir: Path) -> Path:
    """``~`` expanded; relative to the rootdir when relative, whatever the current directory."""
    path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else rootdir / path


def _alembic_ini(resolved: Resolved, builder: str, rootdir: Path) -> Path | None:
    """The alembic config; with a callable or metadata builder, only one to check heads against."""
    path = _path(resolved.value, rootdir)
    if builder and resolved.source == "default" and not path.is_file():
        return None
    return path


def _count(option: Option, raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(f"{option.ini} must be a whole number of at least 1 (got {raw!r})")
    return int(raw)


def _seconds(option: Option, raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:  # NaN too
        raise ConfigurationError(f"{option.ini} must be a positive number of seconds (got {raw!r})")
    return seconds


def _metadata(spec: str, migrate: str) -> str | None:
    if spec and migrate:
        raise ConfigurationError(
            "set either pgtemplate_migrate or pgtemplate_metadata, not both: each builds the "
            "whole template"
        )
    return spec or None


def unknown_names(
    ini_keys: Iterable[str],
    environ: Iterable[str],
    registered: Callable[[str], bool],
    ini_file: str = "the ini file",
) -> list[str]:
    """A note for each ini key (not ``registered`` by anyone) and ``PGTEMPLATE_*`` variable that
    looks like a setting but is none, naming the closest: ``pgtemplate_ulr``, ``PGTEMPLATE_URI``."""
    inis = [option.ini for option in OPTIONS]
    envs = [option.env_var for option in OPTIONS if option.env_var]
    keys = [
        key
        for key in ini_keys
        if key not in inis
        and (key.startswith("pgtemplate") or difflib.get_close_matches(key, inis, 1, 0.85))
    ]
    notes = [_unknown(f"{key} in {ini_file}", key, inis) for key in keys if not registered(key)]
    notes += [
        _unknown(f"environment variable {name}", name, envs)
        for name in environ
        if name.startswith("PGTEMPLATE_") and name not in envs and name not in SUITE_ENV
    ]
    return notes


def _unknown(what: str, name: str, valid: list[str]) -> str:
    option_name = name.lower().removeprefix("pgtemplate_")
    if option_name in REMOVED:
        return f"{what} is a setting that was removed ({REMOVED[option_name]}), so it is ignored"
    if option_name in OPTIONS_BY_NAME:  # a setting without an environment variable
        option = OPTIONS_BY_NAME[option_name]
        return f"{what} is ignored: {option.ini} is read from the ini or {option.cli} only"
    close = difflib.get_close_matches(name, valid, 1, 0.6)
    hint = f"did you mean {close[0]}?" if close else f"expected one of {', '.join(valid)}"
    return f"{what} is not a pytest-pgtemplate setting, so it is ignored; {hint}"
