"""Where the own server's files live: a module of its own, so that a run which never starts a
server (``Run.close`` still looks for its run files) loads nothing more."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """Where data dirs live: tmpfs if it has room (initdb 0.44 s there, 1.35 s on disk).

    Root's home is private, yet the server runs as another OS user, so root falls back to the
    temp dir. Docker's default 64 MB /dev/shm is too small and is skipped.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        vfs = os.statvfs(shm)
        if vfs.f_bavail * vfs.f_frsize >= 1 << 30:
            return shm / f"pytest-pgtemplate-{os.geteuid()}"
    if os.geteuid() == 0:
        return Path(tempfile.gettempdir()) / "pytest-pgtemplate-0"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-pgtemplate"


def may_hold_server_of(cache: Path, owner_pid: int) -> bool:
    """Whether a slot under ``cache`` records run ``owner_pid`` (a server it may have started):
    the run's end asks this before it loads the code that stops servers."""
    for path in cache.expanduser().glob("*/slot*/owner.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("owner_pid") == owner_pid:
            return True
    return False
