"""A template archive across CI runs: a built template kept as SQL, restored instead of migrating.

``pgtemplate_archive_dir`` (a directory a CI cache keeps) holds one entry per fingerprint:
``<template>.sql.gz``, the application's schema and rows as ``pg_dump`` wrote them right after
the build was verified (before the change tracking, which is installed anew: its layout names
object ids, which a restore changes), and ``<template>.json``, written last, which names the
fingerprint, the heads and the dump's sha256. Both are written aside and renamed into place, so
concurrent jobs writing one entry each leave a whole one. A restore is trusted only as a build
is: the entry must be whole and this template's, and the restored database must pass the
migrator's own verification; otherwise it is rebuilt, with a warning. Restoring needs no
PostgreSQL program (the SQL runs over the plugin's connection); archiving needs ``pg_dump`` of
the server's major or newer.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import PgTemplateWarning

if TYPE_CHECKING:
    import asyncpg
    from sqlalchemy.engine import URL

_ROWS_PER_INSERT = 1000  # plain INSERTs run over any connection; many rows each, not one
_VERSION = re.compile(r"\)\s*(\d+)")
_META = re.compile(r"^\\\S+.*$", re.MULTILINE)


@dataclass(frozen=True)
class Archive:
    directory: Path
    bin_dir: str | None = None

    def entry(self, name: str) -> tuple[Path, Path]:
        return self.directory / f"{name}.sql.gz", self.directory / f"{name}.json"

    def load(self, name: str, fingerprint: str) -> str | None:
        """The entry's SQL, if it is whole and this fingerprint's; a warning when it is not."""
        dump, meta = self.entry(name)
        if not meta.exists():
            if dump.exists():
                _warn(f"archive entry {dump} has no {meta.name} (partial): rebuilding")
            return None
        try:
            record = json.loads(meta.read_text())
            data = dump.read_bytes()
        except (OSError, ValueError) as exc:
            _warn(f"archive entry {meta} cannot be read ({exc}): rebuilding")
            return None
        if record.get("fingerprint") != fingerprint:
            _warn(f"archive entry {meta} is another template's (fingerprint differs): rebuilding")
            return None
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            _warn(f"archive entry {dump} is corrupt (its checksum differs): rebuilding")
            return None
        try:
            return gzip.decompress(data).decode()
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            _warn(f"archive entry {dump} is corrupt ({exc}): rebuilding")
            return None

    def store(self, name: str, fingerprint: str, heads: str, url: URL, server_major: int) -> None:
        """Dump the verified template and file it; a failure is a warning, never a test's."""
        tool = pg_dump_for(server_major, self.bin_dir)
        if tool is None:
            _warn(
                f"the template was not archived: no pg_dump of PostgreSQL {server_major} or "
                "newer was found (install the PostgreSQL client, e.g. postgresql-client, or set "
                "pgtemplate_bin_dir)"
            )
            return
        try:
            data = gzip.compress(_dump(tool, url), compresslevel=3)
            self.directory.mkdir(parents=True, exist_ok=True)
            record = {
                "fingerprint": fingerprint,
                "heads": heads,
                "plugin": __version__,
                "server_major": server_major,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            dump, meta = self.entry(name)
            _write_aside(dump, data)
            _write_aside(meta, json.dumps(record, indent=1).encode())  # last: the commit point
        except (OSError, subprocess.SubprocessError) as exc:
            _warn(f"the template was not archived in {self.directory}: {exc}")


async def restore(conn: asyncpg.Connection, sql: str) -> None:
    """Run the dump on an empty database (``pg_dump``'s own SET and search_path lines first);
    psql's meta-commands (``\\restrict``, which newer pg_dumps write) are psql's alone."""
    await conn.execute(_META.sub("", sql))


def pg_dump_for(server_major: int, bin_dir: str | None) -> str | None:
    """A ``pg_dump`` that can read this server: of its major or newer (older ones refuse)."""
    candidates = [Path(bin_dir) / "pg_dump"] if bin_dir else []
    found = shutil.which("pg_dump")
    candidates += [Path(found)] if found else []
    debian = Path("/usr/lib/postgresql")
    majors = sorted((p for p in debian.glob("*") if p.name.isdigit()), key=lambda p: -int(p.name))
    candidates += [major / "bin" / "pg_dump" for major in majors]
    for tool in candidates:
        if os.access(tool, os.X_OK) and (_major(tool) or 0) >= server_major:
            return str(tool)
    return None


def _major(tool: Path) -> int | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [str(tool), "--version"], capture_output=True, text=True, timeout=30, check=True
        )
        match = _VERSION.search(done.stdout)
        return int(match[1]) if match else None
    return None


def _dump(tool: str, url: URL) -> bytes:
    password = url.password
    # URL.set(password=None) keeps the password (None means "unchanged"): replace the field
    target = url._replace(password=None).set(drivername="postgresql").render_as_string()
    env = {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}
    done = subprocess.run(
        [tool, "--format=plain", "--no-owner", f"--rows-per-insert={_ROWS_PER_INSERT}", target],
        capture_output=True,
        env=env,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise subprocess.SubprocessError(done.stderr.decode(errors="replace").strip())
    return done.stdout


def _write_aside(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _warn(message: str) -> None:
    warnings.warn(PgTemplateWarning(f"pytest-pgtemplate: {message}"), stacklevel=3)
