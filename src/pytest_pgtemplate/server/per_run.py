"""The plugin's own server for one run: started once, shared by every worker, stopped by its owner.

The owner is the process that lives for the whole run (the xdist controller, or the only
process without xdist). Workers start the server lazily under the run's file lock, on the
owner's behalf, so a run whose tests never touch a database never starts one; the owner stops
it when the run ends, and the reaper stops it if the owner is killed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LockTimeoutError
from ..urls import redact
from .binaries import find_binaries
from .cache import cache_root
from .own import OwnServer, read_running, start, stop


@dataclass(frozen=True)
class LocalServerRequest:
    owner_pid: int
    bin_dir: str | None
    cache_dir: Path | None
    fresh: bool

    @property
    def cache(self) -> Path:
        return self.cache_dir or cache_root()


def ensure_started(
    request: LocalServerRequest, lock_dir: Path, timeout: float
) -> tuple[OwnServer, bool]:
    """The run's server, and whether this call started it."""
    from filelock import FileLock, Timeout  # it loads asyncio: not at the plugin's import

    lock = FileLock(str(lock_dir / "pgtemplate-server.lock"), timeout=timeout)
    try:
        with lock:
            running = read_running(request.cache, request.owner_pid)
            if running is not None:
                return running, False
            return start_now(request), True
    except Timeout:
        raise LockTimeoutError(
            f"another worker has been starting the plugin's PostgreSQL server for {timeout:g} s; "
            "see its log in the cache directory, or raise pgtemplate_lock_timeout"
        ) from None


def start_now(request: LocalServerRequest) -> OwnServer:
    binaries = find_binaries(request.bin_dir)
    return start(binaries, cache=request.cache, owner_pid=request.owner_pid, fresh=request.fresh)


def stop_owned(request: LocalServerRequest) -> None:
    """Called by the owner at the end of the run; nothing to do when no test needed a server."""
    running = read_running(request.cache, request.owner_pid)
    if running is not None:
        stop(running)


def describe(server: OwnServer, *, started_here: bool) -> str:
    """The header's and the end line's words for the server; its password masked (``***``)."""
    binaries = server.binaries
    how = (
        f"{'warm' if server.warm else 'cold'} start in {server.start_seconds:.2f} s"
        if started_here
        else "started by another worker"
    )
    return (
        f"own PostgreSQL {binaries.version} ({binaries.origin}: {binaries.bin_dir}; {how}) "
        f"at {redact(server.url)}"
    )
