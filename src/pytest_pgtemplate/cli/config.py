"""Find pytest's config file and rootdir the way pytest does, without importing pytest.

The ``pgtemplate`` command runs outside pytest but must agree with the plugin on the server URL
and the project name, which come from the same ``pgtemplate_*`` keys and the same rootdir. This
follows pytest's own search (``_pytest.config.findpaths``, pytest 9) for an invocation with no
arguments: the first directory, from the current one upwards, holding a config file that has a
pytest section; else the first ``pyproject.toml`` met (as rootdir, with no settings); else the
nearest directory with ``setup.py``; else the current directory. From there, the server URL and
the project follow the plugin's precedence, minus pytest's command line.
"""

from __future__ import annotations

import configparser
import functools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigurationError
from ..settings import OPTIONS_BY_NAME, Option, Settings, default_project

CONFIG_NAMES = (
    "pytest.toml",
    ".pytest.toml",
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
)


@dataclass(frozen=True)
class PytestConfig:
    """What pytest would use as rootdir and config file when started in a directory."""

    rootdir: Path
    path: Path | None = None
    values: Mapping[str, object] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        """An ini value as text; ``None`` when unset or empty (pytest's ini default)."""
        value = self.values.get(key)
        return None if value in (None, "") else str(value)


def locate(start: Path) -> PytestConfig:
    first_pyproject: Path | None = None
    for base in (start, *start.parents):
        for name in CONFIG_NAMES:
            path = base / name
            if not path.is_file():
                continue
            if name == "pyproject.toml" and first_pyproject is None:
                first_pyproject = path
            values = read(path)
            if values is not None:
                return PytestConfig(base, path, values)
    if first_pyproject is not None:
        return PytestConfig(first_pyproject.parent, first_pyproject)
    for base in (start, *start.parents):
        if (base / "setup.py").is_file():
            return PytestConfig(base)
    return PytestConfig(start)


def read(path: Path) -> Mapping[str, object] | None:
    """The file's pytest settings; ``None`` when it has no pytest section (pytest skips it)."""
    try:
        if path.suffix == ".toml":
            return _from_toml(path)
        return _from_cfg(path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, configparser.Error) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigurationError(f"cannot read pytest's config file {path}: {reason}") from None


def _from_toml(path: Path) -> Mapping[str, object] | None:
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    if path.name != "pyproject.toml":  # pytest.toml, .pytest.toml: always the config file
        return dict(document.get("pytest", {}))
    tool = document.get("tool", {}).get("pytest", {})
    native = {key: value for key, value in tool.items() if key != "ini_options"}
    if native:
        return native
    ini_options = tool.get("ini_options")
    return None if ini_options is None else dict(ini_options)


def _from_cfg(path: Path) -> Mapping[str, object] | None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    section = "tool:pytest" if path.suffix == ".cfg" else "pytest"
    if parser.has_section(section):
        return dict(parser.items(section))
    return {} if path.name in ("pytest.ini", ".pytest.ini") else None


@functools.cache
def _here() -> PytestConfig:
    return locate(Path.cwd())


def server_url(given: str | None) -> tuple[str, str]:
    """The server's URL, and how its source is named in errors: ``--url``, ``PGTEMPLATE_URL``,
    or ``pgtemplate_url in <config file>``."""
    config = _here()
    for url, source in (
        (given, "--url"),
        (os.environ.get("PGTEMPLATE_URL"), "PGTEMPLATE_URL"),
        (config.get("pgtemplate_url"), f"pgtemplate_url in {config.path}"),
    ):
        if url:
            return url, source
    raise ConfigurationError(
        "no server: pass --url, set PGTEMPLATE_URL, or run where pytest's config file sets "
        "pgtemplate_url; for the plugin's own throwaway server, which exists only while a run "
        "is live, pass --own (the next run sweeps what a dead one left)"
    )


def cache_here(given: str | None) -> Path:
    """The own servers' cache as the plugin finds it: ``--cache-dir`` (from the current
    directory), PGTEMPLATE_CACHE_DIR, pgtemplate_cache_dir (both from the rootdir, as in the
    plugin), else the plugin's default."""
    from ..server.cache import cache_root

    if given:
        return Path(os.path.expanduser(given)).absolute()
    config = _here()
    raw = os.environ.get("PGTEMPLATE_CACHE_DIR") or config.get("pgtemplate_cache_dir")
    if not raw:
        return cache_root()
    path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else config.rootdir / path


def project_here() -> str:
    """The plugin's precedence for pgtemplate_project, minus the pytest command line."""
    env_var = OPTIONS_BY_NAME["project"].env_var
    config = _here()
    project = (
        (os.environ.get(env_var) if env_var else None)
        or config.get("pgtemplate_project")
        or default_project(config.rootdir)
    )
    if not project:
        raise ConfigurationError(
            f"no project in {config.rootdir}: pass --project NAME, --run ID or --all-projects"
        )
    return project


def settings_here() -> Settings:
    """The plugin's settings as a run started here would resolve them, minus its command line."""
    from ..settings import resolve

    config = _here()

    def lookup(option: Option) -> tuple[str | bool | None, str | None]:
        return None, config.get(option.ini)

    return resolve(lookup, os.environ, config.rootdir)


def rootdir_here() -> Path:
    return _here().rootdir
