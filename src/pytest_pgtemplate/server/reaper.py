"""The own server's postmaster as a process: its pidfile, readiness, stopping; the reaper.

Run as a script, ``python reaper.py OWNER_PID OWNER_STARTED DATA_DIR`` guards one slot from the
moment it is claimed, before initdb and ``pg_ctl start``: a run killed anywhere during start-up
must not leave a postmaster behind. While the owner lives it only waits; it leaves when the slot
is released (``owner.json`` gone or naming another run) or when the server recorded there has
stopped. Once the owner is gone it shuts down (SIGQUIT, PostgreSQL's "immediate" mode) any
postmaster on the data dir, for a grace period (a postmaster that an orphaned ``pg_ctl`` forked
writes its pidfile a little later), but only while ``owner.json`` still names the dead owner: a
new run may already have taken the slot over and started its own server there. Stdlib only and
no package imports: started by path, it loads in milliseconds and never imports SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.2
GRACE_POLL_SECONDS = 0.02
GRACE_SECONDS = 10.0  # how long a dead owner's start-up may still bring a postmaster up
QUIET_SECONDS = 1.0  # ... but no process naming the data dir for this long means nothing will
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

    Returns False if it still runs after ``timeout`` seconds. Polls every millisecond: a fast
    shutdown is over long before ``pg_ctl stop``'s next look (it polls every 100 ms).
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


def load_owner(slot: Path) -> dict[str, Any]:
    """The slot's ``owner.json`` record; empty when it is missing or unreadable (released)."""
    try:
        record = json.loads((slot / "owner.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


@contextlib.contextmanager
def slots_lock(base: Path) -> Iterator[None]:
    """The lock under which runs claim slots; the kernel releases it even on SIGKILL."""
    with (base / "slots.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _names(record: dict[str, Any], owner_pid: int, owner_started: str | None) -> bool:
    started = record.get("owner_started") or None
    return record.get("owner_pid") == owner_pid and started == owner_started


def _recorded_server_stopped(record: dict[str, Any], data_dir: Path) -> bool:
    """Whether start-up finished (the record names the server) and that server is gone."""
    pid = record.get("server", {}).get("pid")
    return isinstance(pid, int) and postmaster_pid(data_dir) != pid


def _others_naming(data_dir: Path) -> bool:
    """Whether a process besides this one has ``data_dir`` on its command line (initdb, pg_ctl,
    a postmaster yet to write its pidfile). Without /proc, assume so: wait out the grace."""
    if not _HAVE_PROC:
        return True
    needle = os.fsencode(data_dir)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    return True
    return False


def _halt_for_dead_owner(data_dir: Path, owner_pid: int, owner_started: str | None) -> bool:
    """Halt the postmaster on ``data_dir`` if the slot still names the dead owner.

    Returns True when the reaper is done: the slot changed hands, or a postmaster was halted
    (the dead owner cannot start another one). The claim lock keeps a new run from taking the
    slot over between the check and the signal.
    """
    with slots_lock(data_dir.parent.parent):
        record = load_owner(data_dir.parent)
        if not _names(record, owner_pid, owner_started):
            return True
        if postmaster_pid(data_dir) is None:
            return "server" in record  # start-up had finished: nothing more can come
        halt(data_dir, immediate=True)
        return True


def reap(owner_pid: int, owner_started: str | None, data_dir: Path) -> None:
    """Wait while the owner lives and holds the slot; then halt what its start-up left."""
    while alive(owner_pid, owner_started):
        record = load_owner(data_dir.parent)
        if not _names(record, owner_pid, owner_started):
            return
        if _recorded_server_stopped(record, data_dir):
            return
        time.sleep(POLL_SECONDS)
    began = time.monotonic()
    quiet_since = began
    while time.monotonic() - began < GRACE_SECONDS:
        if _halt_for_dead_owner(data_dir, owner_pid, owner_started):
            return
        now = time.monotonic()
        if _others_naming(data_dir):
            quiet_since = now
        elif now - quiet_since >= QUIET_SECONDS:
            return
        time.sleep(GRACE_POLL_SECONDS)


def main(argv: list[str]) -> int:
    owner_pid, owner_started, data_dir = argv
    reap(int(owner_pid), owner_started or None, Path(data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
