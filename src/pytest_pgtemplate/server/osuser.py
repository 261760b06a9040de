"""Running PostgreSQL as an unprivileged OS user when pytest runs as root (it refuses root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def server_user() -> RunAs | None:
    """Whom to run PostgreSQL as: it refuses root, so root uses ``postgres``, else ``nobody``.

    ``nobody`` serves containers that have no ``postgres`` user: the data dir then belongs to
    ``nobody``, which is fine for a throwaway server reached over TCP with trust auth.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            groups = tuple(os.getgrouplist(name, entry.pw_gid))
            return RunAs(name, entry.pw_uid, entry.pw_gid, groups)
    raise ConfigurationError(
        "pytest runs as root, which PostgreSQL refuses, and there is no 'postgres' or 'nobody' "
        "OS user to run it as: create one (useradd --system postgres), run pytest as another "
        "user, or set pgtemplate_url / PGTEMPLATE_URL to a running server."
    )


def shared_dir(path: Path) -> Path:
    """Create ``path`` (0755) and make sure it is ours: /dev/shm is writable by anyone."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True)  # racing runs may create it at once
        path.chmod(0o755)  # whatever the umask: root's server user must pass through
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ConfigurationError(
            f"{path} must be a directory owned by uid {os.geteuid()} (it is not, owner uid "
            f"{info.st_uid}); delete it or choose another cache directory."
        )
    return path


def private_dir(path: Path, run_as: RunAs | None) -> Path:
    """Create ``path`` (0700) for the server's OS user."""
    path.mkdir(mode=0o700, exist_ok=True)
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
    return path


def _permits(path: Path, run_as: RunAs, owner_bit: int) -> bool:
    """Whether ``run_as`` has the permission ``owner_bit`` (read, write or execute) on ``path``."""
    info = path.stat()
    if info.st_uid == run_as.uid:
        return bool(info.st_mode & owner_bit)
    shift = 3 if info.st_gid in run_as.groups else 6
    return bool(info.st_mode & (owner_bit >> shift))


def _first_closed(path: Path, run_as: RunAs) -> Path | None:
    """The outermost directory on the way to ``path`` that ``run_as`` may not enter."""
    for part in reversed((path, *path.parents)):
        if not _permits(part, run_as, stat.S_IXUSR):
            return part
    return None


def check_reachable(path: Path, run_as: RunAs) -> None:
    """Fail early, and clearly, if the server's OS user cannot reach ``path``."""
    closed = _first_closed(path, run_as)
    if closed is not None:
        raise ConfigurationError(
            f"PostgreSQL runs as OS user {run_as.name!r} (it refuses root), which cannot "
            f"enter {closed}; choose a cache directory it can reach, e.g. under /tmp."
        )


def may_run(programs: list[Path], run_as: RunAs) -> bool:
    """Whether the server's OS user may reach and run every one of ``programs``."""
    return all(
        _first_closed(program.parent, run_as) is None and _permits(program, run_as, stat.S_IXUSR)
        for program in programs
    )


def cannot_run(program: Path, run_as: RunAs, why: str) -> ConfigurationError:
    """The error for programs the server's OS user may not run, even from a copy (``why``)."""
    closed = _first_closed(program.parent, run_as)
    return ConfigurationError(
        f"PostgreSQL runs as OS user {run_as.name!r} (it refuses root), which may not "
        f"run {program}{f' (it cannot enter {closed})' if closed else ''}, and {why}. Install or "
        "unpack PostgreSQL where every user may read and run it (e.g. under /opt, "
        "`chmod -R a+rX`), and point pgtemplate_bin_dir at its bin directory."
    )


def run_program(
    args: list[str], run_as: RunAs | None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program, as the server's OS user when we are root."""
    return subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, "LC_ALL": "C"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        extra_groups=list(run_as.groups) if run_as else None,
    )
