"""``pgtemplate cache list|clean`` and ``--own``: the plugin's own servers, seen from outside a run.

A slot, ``<cache>/<major>/slot<N>/``, belongs to the run whose pid its ``owner.json`` records
while that process lives (``server.own``). Listing only reads. Cleaning removes a slot (its data
directory, log and password file: the next run there starts with initdb) only when no live run
owns it and no server runs on it, checked under the lock runs take to claim a slot, so no run
can take it over meanwhile. ``--own`` finds a live run's server and its password as that run's
own workers do (``server.own.read_running``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..server import auth, reaper
from ..server.own import OwnServer, read_running
from .options import EXIT_REFUSED, Options
from .table import MB, Outcome, as_json, table, total_mb

COLUMNS = ("slot", "major", "owner_pid", "alive", "running", "port", "size_mb", "age_seconds")
_SLOT = re.compile(r"slot(\d+)")


@dataclass(frozen=True)
class Slot:
    path: Path
    record: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def owner_pid(self) -> int | None:
        pid = self.record.get("owner_pid")
        return pid if isinstance(pid, int) else None

    def owned(self) -> bool:
        """Whether a live run owns it (the pid alone could be a reused one: its start time too)."""
        pid = self.owner_pid
        return pid is not None and reaper.alive(pid, self.record.get("owner_started"))

    def postmaster(self) -> int | None:
        return reaper.postmaster_pid(self.path / "data")


def slots(base: Path, pattern: str = "*/slot*") -> list[Slot]:
    """The slots under ``base`` (the cache, or with ``slot*`` one major's directory)."""
    found = [
        path
        for path in base.glob(pattern)
        if _SLOT.fullmatch(path.name) and path.is_dir() and not path.is_symlink()
    ]
    found.sort(key=lambda path: (path.parent.name.zfill(8), path.name.zfill(12)))
    return [Slot(path, reaper.load_owner(path)) for path in found]


def row(slot: Slot) -> dict[str, object]:
    running = slot.postmaster() is not None
    pidfile = reaper.read_pidfile(slot.path / "data") if running else []
    port = pidfile[3].strip() if len(pidfile) > 3 else ""
    size = _size(slot.path) + _size(auth.password_file(slot.path))
    major = slot.path.parent.name
    return {
        "slot": slot.name,
        "major": int(major) if major.isdigit() else None,
        "path": str(slot.path),
        "owner_pid": slot.owner_pid,
        "alive": slot.owned(),
        "running": running,
        "port": int(port) if port.isdigit() else None,
        "size_bytes": size,
        "size_mb": round(size / MB, 1),
        "age_seconds": _age(slot.path),
    }


def run(options: Options, cache: Path) -> Outcome:
    if options.cache_command == "clean":
        return clean(cache, dry_run=options.dry_run, as_json_rows=options.json)
    rows = [row(slot) for slot in slots(cache)]
    if options.json:
        return Outcome(as_json(rows))
    if not rows:
        return Outcome(f"no data directories in {cache}\n")
    return Outcome(f"{_count(rows)} in {cache}:\n" + table(rows, COLUMNS))


def clean(cache: Path, *, dry_run: bool, as_json_rows: bool) -> Outcome:
    rows: list[dict[str, object]] = []
    refused: list[str] = []
    for base in sorted({slot.path.parent for slot in slots(cache)}):
        with reaper.slots_lock(base):  # no run claims a slot of this major meanwhile
            rows += [_clean_one(slot, dry_run, refused) for slot in slots(base, "slot*")]
    status = EXIT_REFUSED if refused else 0
    if as_json_rows:
        return Outcome(as_json(rows), refused, status)
    return Outcome(_clean_text(rows, cache, dry_run), refused, status)


def _clean_one(slot: Slot, dry_run: bool, refused: list[str]) -> dict[str, object]:
    entry = row(slot)
    entry["kept_because"] = reason = _kept_because(slot)
    entry["removed"] = False
    if reason is None and not dry_run:
        try:
            shutil.rmtree(slot.path)
            auth.password_file(slot.path).unlink(missing_ok=True)
            entry["removed"] = True
        except OSError as exc:
            refused.append(f"not removed: {slot.path}: {exc.strerror or exc}")
    return entry


def _kept_because(slot: Slot) -> str | None:
    if slot.owned():
        return f"a live run (pid {slot.owner_pid}) owns it"
    if not slot.record and (slot.path / "owner.json").exists():
        return "its owner.json cannot be read, so a live run may own it"
    postmaster = slot.postmaster()
    if postmaster is not None:
        return (
            f"a server (pid {postmaster}) still runs on it; its run is gone, so its reaper "
            "stops it within seconds: try again then"
        )
    return None


def _clean_text(rows: list[dict[str, object]], cache: Path, dry_run: bool) -> str:
    doomed = [r for r in rows if r["kept_because"] is None and (dry_run or r["removed"])]
    verb = "would remove" if dry_run else "removed"
    text = f"{verb} {_count(doomed)} ({cache}):\n" + table(doomed, COLUMNS) if doomed else ""
    text = text or f"nothing to remove in {cache}\n"
    return text + "".join(
        f"kept {r['slot']}: {r['kept_because']}\n" for r in rows if r["kept_because"]
    )


def own_server(cache: Path, owner: int | None) -> OwnServer:
    """The server of the live run ``owner``, or of the only live run that has one."""
    live = [s.owner_pid or 0 for s in slots(cache) if "server" in s.record and s.owned()]
    if owner is not None and owner not in live:
        raise ConfigurationError(_no_server(cache, f"run {owner} has no live own server"))
    if not live:
        raise ConfigurationError(_no_server(cache, "no live run has an own server"))
    if owner is None and len(live) > 1:
        pids = ", ".join(str(pid) for pid in live)
        raise ConfigurationError(
            f"{len(live)} live runs have an own server in {cache} (owner pids {pids}): "
            "pass --owner PID to pick one"
        )
    pid = owner if owner is not None else live[0]
    server = read_running(cache, pid)
    if server is None:
        raise ConfigurationError(_no_server(cache, f"the own server of run {pid} is stopping"))
    if not server.password:
        raise ConfigurationError(
            f"cannot read the password of run {pid}'s own server ({server.password_file}): "
            "run pgtemplate as the user who runs pytest"
        )
    return server


def _no_server(cache: Path, what: str) -> str:
    return (
        f"{what} in {cache}: a run starts its own server when a test first asks for a "
        "database, and stops it at its end (`pgtemplate cache list` shows the slots; "
        "--cache-dir DIR if the run used another cache)"
    )


def _size(path: Path) -> int:
    """Bytes of the files under ``path`` (or of ``path``), ignoring files that go meanwhile."""
    total = 0
    with contextlib.suppress(OSError):
        total += os.lstat(path).st_size if not path.is_dir() else 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _age(slot: Path) -> int | None:
    """Since a run last claimed or released the slot (its ``owner.json`` came or went)."""
    try:
        return max(0, int(time.time() - slot.lstat().st_mtime))
    except OSError:
        return None


def _count(rows: list[dict[str, object]]) -> str:
    return f"{len(rows)} slot(s), {total_mb(rows):.1f} MB"
