"""The embedded server's postmaster as a process: its pidfile, readiness, stopping; the reaper.

Run as a script, ``python _reaper.py OWNER_PID OWNER_STARTED SERVER_PID DATA_DIR`` waits while
the server runs and shuts it down at once (SIGQUIT, PostgreSQL's "immediate" mode) when the
owning test run is gone, so even a SIGKILLed pytest leaves no postgres behind; it exits as soon
as the server is gone. Hence stdlib only and no package imports: started by path, it loads in
milliseconds and never imports SQLAlchemy.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.2
_HAVE_PROC = Path("/proc/self/stat").exists()


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` from the state on (the name before may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def process_started(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell the owner from a reused pid."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs (zombies do not count) and, given ``started``, is that process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return not _HAVE_PROC
    return fields[0] != "Z" and (not started or fields[19] == started)


def read_pidfile(data_dir: Path) -> list[str]:
    """Lines of ``postmaster.pid``: pid, data dir, start, port, socket dir, host, shm, status."""
    try:
        return (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []


def _runs_on(pid: int, data_dir: Path) -> bool:
    """Whether ``pid``'s command line names ``data_dir`` (pg_ctl passes ``-D``): no reused pid."""
    try:
        return os.fsencode(data_dir) in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not _HAVE_PROC
    except OSError:
        return True


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the live postmaster serving ``data_dir``, or None."""
    lines = read_pidfile(data_dir)
    if not lines or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    return pid if alive(pid) and _runs_on(pid, data_dir) else None


def stop_postmaster(data_dir: Path, sig: int, timeout: float) -> bool:
    """Send ``sig`` to the postmaster of ``data_dir`` and wait until it has finished.

    Returns False if it still runs after ``timeout`` seconds. Polls every millisecond: the
    pidfile disappears ~15 ms after a fast shutdown starts, while ``pg_ctl stop`` waits 100 ms.
    """
    pid = postmaster_pid(data_dir)
    if pid is None:
        return True
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid) and (data_dir / "postmaster.pid").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def halt(data_dir: Path, *, immediate: bool) -> bool:
    """Stop the postmaster on ``data_dir``, escalating to SIGKILL; False if it survived that.

    Fast shutdown (SIGINT) ends sessions cleanly; immediate (SIGQUIT) is for a dead run's server.
    """
    steps = [] if immediate else [(signal.SIGINT, 30.0)]
    for sig, timeout in [*steps, (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)]:
        if stop_postmaster(data_dir, sig, timeout):
            if read_pidfile(data_dir) and postmaster_pid(data_dir) is None:
                (data_dir / "postmaster.pid").unlink(missing_ok=True)  # left by a killed server
            return True
    return False


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_ready(data_dir: Path, port: int, log: Path, timeout: float) -> int | None:
    """Poll ``postmaster.pid`` every ms until it says ready (pg_ctl's own wait polls at 10 Hz).

    Returns the postmaster's pid, or None when it died, logged FATAL/PANIC or hung (it is then
    stopped). The port tells this start's pidfile from one a killed server left behind.
    """
    deadline = time.monotonic() + timeout
    polls = 0
    while time.monotonic() < deadline:
        lines = read_pidfile(data_dir)
        if len(lines) >= 8 and lines[3].strip() == str(port) and lines[0].isdigit():
            if lines[7].strip() == "ready":
                return int(lines[0])
            if not alive(int(lines[0])):
                return None
        if polls % 16 == 0 and re.search(r"\b(FATAL|PANIC):", log_tail(log)):
            break
        polls += 1
        time.sleep(0.001)
    halt(data_dir, immediate=True)
    return None


def reap(owner_pid: int, owner_started: str | None, server_pid: int, data_dir: Path) -> None:
    """While the server runs, shut it down as soon as its owner is gone."""
    while postmaster_pid(data_dir) == server_pid:
        if not alive(owner_pid, owner_started):
            halt(data_dir, immediate=True)
            return
        time.sleep(POLL_SECONDS)


def main(argv: list[str]) -> int:
    owner_pid, owner_started, server_pid, data_dir = argv
    reap(int(owner_pid), owner_started or None, int(server_pid), Path(data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
