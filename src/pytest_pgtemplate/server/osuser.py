"""Running PostgreSQL as an unprivileged OS user when pytest runs as root (it refuses root)."""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError

SERVER_OS_USER = "pgtemplate"
"""Root's server runs as this OS user of its own: never ``postgres``, which owns the machine's
main cluster (a server of ours running as it could read and replace that cluster's files), and
never ``nobody``, which other daemons share."""
_CREATE_ROUNDS = 5
_CREATE_LOCK = "pytest-pgtemplate-useradd.lock"
_NO_LOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
_PROGRAM_ENV = ("PATH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "TMPDIR", "TZ")
"""All of our environment that PostgreSQL's programs get: as root, the server's OS user could
read the rest (the run's URLs, password included) in ``/proc/<pid>/environ``."""


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def server_user() -> RunAs | None:
    """Whom to run PostgreSQL as: it refuses root, so root uses ``pgtemplate``, created if missing.

    ``None`` (ourselves) for anyone else.
    """
    if os.geteuid() != 0:
        return None
    entry = ensure_os_user(SERVER_OS_USER)
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def ensure_os_user(name: str) -> pwd.struct_passwd:
    """The system user ``name``, created without a home or a login shell if it is missing.

    Concurrent runs may race to create it: they take turns (``_creation_lock``), and the user
    existing after a command, whether that command failed or not, is success.
    """
    entry = _lookup(name)
    if entry is not None:
        return _checked(entry)
    failures: list[str] = []
    with _creation_lock():
        for attempt in range(_CREATE_ROUNDS):
            entry = _lookup(name) or _create(name, failures)
            if entry is not None:
                return _checked(entry)
            if not failures:  # nothing to create it with
                break
            time.sleep(0.2 * (attempt + 1))  # another tool may hold /etc/passwd's lock
    raise _cannot_create(name, failures)


@contextlib.contextmanager
def _creation_lock() -> Iterator[None]:
    """Runs creating the server's OS user take turns: four concurrent ``useradd`` here all
    succeeded, each writing /etc/passwd over the others' (two uids handed out, one kept).

    In ``/run`` (only root may write there; the kernel releases the lock even on SIGKILL).
    """
    run = Path("/run")
    directory = run if run.is_dir() and os.access(run, os.W_OK) else Path(tempfile.gettempdir())
    fd = os.open(directory / _CREATE_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _create(name: str, failures: list[str]) -> pwd.struct_passwd | None:
    """Try each creating command until the user exists; what failed goes to ``failures``."""
    for command in _creators(name):
        failures.append(_run_creator(command))
        entry = _lookup(name)
        if entry is not None:
            return entry
    return None


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _checked(entry: pwd.struct_passwd) -> pwd.struct_passwd:
    if entry.pw_uid == 0:
        raise ConfigurationError(
            f"OS user {entry.pw_name!r} has uid 0 (root), which PostgreSQL refuses and which "
            "would defeat running it as a user of its own; give it a uid of its own."
        )
    return entry


def _creators(name: str) -> list[list[str]]:
    """Commands that create ``name``: useradd, else adduser (Debian's options, then BusyBox's)."""
    shell = next((path for path in _NO_LOGIN if Path(path).exists()), _NO_LOGIN[-1])
    commands = []
    if useradd := _sbin("useradd"):
        group = ["--gid", name] if _group_exists(name) else ["--user-group"]
        commands.append([useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent"])
        commands[-1] += ["--shell", shell, *group, name]
    elif adduser := _sbin("adduser"):
        debian = ["--system", "--group", "--no-create-home", "--home", "/nonexistent"]
        commands.append([adduser, *debian, "--shell", shell, name])
        commands.append([adduser, "-S", "-D", "-H", "-h", "/nonexistent", "-s", shell, name])
    return commands


def _sbin(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _run_creator(command: list[str]) -> str:
    """Run one creating command; what it said, for the error if none succeeds."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{command[0]}: {exc}"
    said = (done.stderr or done.stdout).strip()  # useradd's own messages name it
    return said or f"{Path(command[0]).name} exited with status {done.returncode}"


def _cannot_create(name: str, failures: list[str]) -> ConfigurationError:
    said = "; ".join(dict.fromkeys(failures)) or "neither useradd nor adduser was found"
    return ConfigurationError(
        f"pytest runs as root, which PostgreSQL refuses, so the plugin runs its server as the OS "
        f"user {name!r}, which could not be created ({said}). Create it by hand (useradd --system "
        f"--no-create-home --shell /usr/sbin/nologin --user-group {name}), run pytest as a normal "
        "user, or set pgtemplate_url / PGTEMPLATE_URL to a running server."
    )


_CACHE_FIX = "set pgtemplate_cache_dir (or PGTEMPLATE_CACHE_DIR) to another directory"


def shared_dir(path: Path) -> Path:
    """Create ``path`` (0755) and make sure it is ours: /dev/shm is writable by anyone."""
    try:
        if not path.exists():
            path.mkdir(parents=True, exist_ok=True)  # racing runs may create it at once
            path.chmod(0o755)  # whatever the umask: root's server user must pass through
        info = path.lstat()
    except OSError as exc:
        under = next((parent for parent in path.parents if os.path.isdir(parent)), path.anchor)
        raise ConfigurationError(
            f"the own server's cache directory {path} cannot be created under {under} "
            f"({exc.strerror}): {_CACHE_FIX}, one you may create and write"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "a file"
        raise ConfigurationError(
            f"the own server's cache directory {path} must be a directory (it is {kind}): "
            f"delete it, or {_CACHE_FIX}"
        )
    if info.st_uid != os.geteuid():
        raise ConfigurationError(
            f"the own server's cache directory {path} must be owned by uid {os.geteuid()}, who "
            f"runs pytest (it is owned by uid {info.st_uid}): delete it, or {_CACHE_FIX}"
        )
    return path


def private_dir(path: Path, run_as: RunAs | None) -> Path:
    """Create ``path`` (0700) for the server's OS user; an existing one is made so too.

    Through a descriptor opened without following links: ``path`` may sit where that user (or,
    in /tmp, anyone) could have put a symlink to redirect our chown.
    """
    path.mkdir(mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigurationError(f"{path} must be a directory ({exc}); delete it") from None
    try:
        if run_as is not None:
            os.fchown(fd, run_as.uid, run_as.gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def write_owned(path: Path, text: str, run_as: RunAs | None) -> None:
    """Replace ``path`` with ``text``, mode 0600, owned by ``run_as`` (``None``: by us).

    Written to a new file, then renamed over ``path``: a symlink planted at ``path`` (in a data
    dir the server's OS user owns) is replaced, never followed.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            if run_as is not None:
                os.fchown(handle.fileno(), run_as.uid, run_as.gid)
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


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
    """Run a PostgreSQL program, as the server's OS user when we are root, with little of our
    environment (``_PROGRAM_ENV``): the server inherits it."""
    kept = {name: os.environ[name] for name in _PROGRAM_ENV if name in os.environ}
    return subprocess.run(
        args,
        cwd=cwd,
        env={**kept, "LC_ALL": "C"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        extra_groups=list(run_as.groups) if run_as else None,
    )
