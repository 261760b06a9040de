"""A cluster's data directory: whether the next start may reuse it, building a new one, and the
settings (``pgtemplate.conf``) and access rules (``pg_hba.conf``) rewritten at every start.

A data dir is reused only when it is a finished cluster of the right major, owned by the server's
OS user, and lets no one in without the password (``auth``); anything else is removed and built
again, so a corrupt or outdated cache costs one initdb, never a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import ServerUnavailableError
from . import auth
from .binaries import Binaries
from .osuser import RunAs, run_program, write_owned

SUPERUSER = "postgres"
_INCLUDE = "include 'pgtemplate.conf'  # added by pytest-pgtemplate"
_TUNING = {  # a throwaway test server: durability buys nothing
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "autovacuum": "off",
    "jit": "off",
    "shared_buffers": "128MB",
    "max_connections": "200",
    "max_prepared_transactions": "20",  # tests of two-phase commit run on the own server too
    "listen_addresses": "'127.0.0.1'",
}


def reusable(slot: Path, binaries: Binaries, run_as: RunAs | None) -> str | None:
    """The password of the slot's cluster if that may be reused as it is; ``None``: rebuild."""
    password = auth.read_password(slot)
    if password is None or not _sound(slot / "data", binaries, run_as):
        return None
    return password


def _sound(data: Path, binaries: Binaries, run_as: RunAs | None) -> bool:
    """Whether ``data`` looks like a finished cluster of this major owned by the server user,
    letting no one in without the password (an older version's cluster trusted everyone)."""
    try:
        version = (data / "PG_VERSION").read_text().strip()
        owner = data.stat().st_uid
        finished = _INCLUDE in (data / "postgresql.conf").read_text()
    except OSError:
        return False
    expected = run_as.uid if run_as else os.geteuid()
    complete = (data / "global" / "pg_control").is_file()
    ours = version == str(binaries.major) and owner == expected
    return ours and finished and complete and auth.hba_needs_password(data)


def initdb(binaries: Binaries, slot: Path, run_as: RunAs | None) -> str:
    """Create a fresh cluster with a new password, SCRAM auth and no fsync; locale C.UTF-8 where
    the OS has it, else C. Returns the password."""
    data = slot / "data"
    _remove(data)
    password = auth.new_password(slot)
    args = [binaries.tool("initdb"), "-D", str(data), f"--username={SUPERUSER}"]
    args += [f"--auth={auth.METHOD}", "--encoding=UTF8", "--no-sync"]
    args += ["--no-instructions"] if binaries.major >= 13 else []
    output = ""
    with auth.initdb_password_file(slot, password, run_as) as pwfile:
        for locale in ("C.UTF-8", "C"):
            done = run_program([*args, f"--pwfile={pwfile}", f"--locale={locale}"], run_as, slot)
            if done.returncode == 0:
                with (data / "postgresql.conf").open("a") as conf:
                    conf.write(f"\n{_INCLUDE}\n")
                return password
            output = done.stdout + done.stderr
            _remove(data)
    raise ServerUnavailableError(
        f"initdb failed in {data}:\n{output.strip()}\nFix the cause above, or set "
        "pgtemplate_url / PGTEMPLATE_URL to a running server instead."
    )


def _remove(data: Path) -> None:
    """Remove a data dir to rebuild it, whoever owns it (an older version's server user)."""
    shutil.rmtree(data, ignore_errors=True)
    if data.exists() or data.is_symlink():
        raise ServerUnavailableError(
            f"cannot remove the old data directory {data} to rebuild it; delete it by hand"
        )


def write_run_conf(data: Path, port: int, socket_dir: Path, run_as: RunAs | None) -> None:
    """Settings and access rules rewritten at every start: a warm cluster gets the current ones."""
    escaped = str(socket_dir).replace("'", "''")
    settings = {**_TUNING, "port": str(port), "unix_socket_directories": f"'{escaped}'"}
    text = "".join(f"{name} = {value}\n" for name, value in settings.items())
    write_owned(data / "pgtemplate.conf", text, run_as)
    auth.write_hba(data, run_as)
