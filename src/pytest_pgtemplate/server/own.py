"""A throwaway PostgreSQL server for runs that name none: find the programs, start, stop.

Servers live in numbered slots, ``cache_root()/<major>/slot<N>/``. A slot belongs to the run whose
pid its ``owner.json`` records while that process lives, so two concurrent runs get two servers,
and the next run takes over a dead run's slot with its data (templates included: a warm start).
A detached reaper (``reaper``), spawned as soon as the slot is claimed, stops the server when
the owning run dies, even by SIGKILL and even in the middle of starting it. Only the run gets
in: the cluster's password (``auth``) is in the URLs it hands out and in a file only it may read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import ConfigurationError, ServerUnavailableError
from . import auth, reaper
from .binaries import Binaries
from .cluster import SUPERUSER, initdb, reusable, write_run_conf
from .osuser import RunAs, check_reachable, private_dir, run_program, server_user, shared_dir
from .usercopy import runnable_binaries

_READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class OwnServer:
    """A server this module started; ``url`` is its maintenance database, password included.

    The password is no field of ``owner.json`` (the slot, where that lies, belongs to the
    server's OS user): it is read back from ``password_file``, and kept out of ``repr``.
    """

    data_dir: Path
    socket_dir: Path
    port: int
    user: str
    pid: int
    warm: bool
    start_seconds: float
    binaries: Binaries
    os_user: str
    password: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        secret = f":{quote(self.password, safe='')}" if self.password else ""
        return f"postgresql://{quote(self.user, safe='')}{secret}@127.0.0.1:{self.port}/postgres"

    @property
    def password_file(self) -> Path:
        return auth.password_file(self.data_dir.parent)

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "server.log"


def start(binaries: Binaries, *, cache: Path, owner_pid: int, fresh: bool = False) -> OwnServer:
    """Start a server for the run ``owner_pid`` in the first slot no live run owns.

    The slot's data dir is reused when sound (``warm``), rebuilt when not or when ``fresh``.
    """
    began = time.perf_counter()
    if not reaper.alive(owner_pid):
        raise ValueError(f"owner_pid {owner_pid} is not a running process")
    run_as = server_user()
    cache = shared_dir(cache.expanduser().resolve())
    base = shared_dir(cache / str(binaries.major))
    if run_as is not None:
        check_reachable(base, run_as)
    binaries = runnable_binaries(binaries, cache, run_as)  # a wheel under /root: copied once
    slot = _claim_slot(base, owner_pid, run_as)
    try:
        _spawn_reaper(owner_pid, slot / "data")
        server = _start_in(slot, binaries, run_as, fresh=fresh, began=began)
        _save_owner(slot, owner_pid, server)
    except BaseException:
        reaper.halt(slot / "data", immediate=True)
        (slot / "owner.json").unlink(missing_ok=True)
        raise
    return server


def stop(server: OwnServer) -> None:
    """Stop ``server`` and free its slot; the data dir stays for the next warm start."""
    stop_data_dir(server.data_dir)


def stop_data_dir(data_dir: Path) -> None:
    """Stop the postmaster on ``data_dir`` from any process (e.g. xdist's controller); idempotent.

    Signals it directly, as ``pg_ctl stop`` does, but works as root too and needs no binaries.
    """
    if not reaper.halt(data_dir, immediate=False):
        raise ServerUnavailableError(f"the server on {data_dir} survived SIGKILL; reboot?")
    (data_dir.parent / "owner.json").unlink(missing_ok=True)


def read_running(cache: Path, owner_pid: int) -> OwnServer | None:
    """The live server that run ``owner_pid`` started under ``cache``, if any."""
    for path in sorted(cache.expanduser().resolve().glob("*/slot*/owner.json")):
        record = reaper.load_owner(path.parent)
        if record.get("owner_pid") != owner_pid or "server" not in record:
            continue
        server = _server_from(record["server"])
        if reaper.postmaster_pid(server.data_dir) == server.pid:
            return server
    return None


def _claim_slot(base: Path, owner_pid: int, run_as: RunAs | None) -> Path:
    """Take the first slot whose recorded owner is not alive, and record ``owner_pid`` there."""
    with reaper.slots_lock(base):
        for number in count():
            slot = base / f"slot{number}"
            record = reaper.load_owner(slot)
            if not reaper.alive(record.get("owner_pid", 0), record.get("owner_started")):
                private_dir(slot, run_as)
                _save_owner(slot, owner_pid, None)
                return slot
    raise AssertionError("unreachable")  # pragma: no cover


def _save_owner(slot: Path, owner_pid: int, server: OwnServer | None) -> None:
    record: dict[str, Any] = {
        "owner_pid": owner_pid,
        "owner_started": reaper.process_started(owner_pid),
        "started_at": time.time(),
    }
    if server is not None:
        fields = asdict(server)
        del fields["password"]  # see OwnServer
        record["port"] = server.port
        record["server"] = json.loads(json.dumps(fields, default=str))
    temporary = slot / f"owner.json.{os.getpid()}"
    temporary.write_text(json.dumps(record, indent=1))
    temporary.replace(slot / "owner.json")


def _server_from(fields: dict[str, Any]) -> OwnServer:
    found = fields["binaries"]
    binaries = Binaries(Path(found["bin_dir"]), found["version"], found["major"], found["origin"])
    paths = {"data_dir": Path(fields["data_dir"]), "socket_dir": Path(fields["socket_dir"])}
    password = auth.read_password(paths["data_dir"].parent) or ""
    return OwnServer(**{**fields, **paths, "binaries": binaries, "password": password})


def _start_in(
    slot: Path, binaries: Binaries, run_as: RunAs | None, *, fresh: bool, began: float
) -> OwnServer:
    """Start in a claimed slot: stop a dead run's server, then reuse or rebuild the data dir."""
    data = slot / "data"
    if not reaper.halt(data, immediate=True):
        raise ServerUnavailableError(f"a dead run's server on {data} survived SIGKILL")
    socket_dir = _socket_dir(slot, run_as)
    launched = None
    password = None if fresh else reusable(slot, binaries, run_as)
    if password is not None:
        with contextlib.suppress(ServerUnavailableError):
            launched = _launch(binaries, data, socket_dir, run_as)
    warm = launched is not None
    if password is None or launched is None:
        password = initdb(binaries, slot, run_as)
        launched = _launch(binaries, data, socket_dir, run_as)
    os_user = run_as.name if run_as else _user_name(os.geteuid())
    elapsed = time.perf_counter() - began
    pid, port = launched
    return OwnServer(
        data, socket_dir, port, SUPERUSER, pid, warm, elapsed, binaries, os_user, password
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _socket_dir(slot: Path, run_as: RunAs | None) -> Path:
    """``slot/sock``, or a short dir in /tmp if that is too long for a unix socket's path."""
    path = slot / "sock"
    if len(os.fsencode(path)) + len("/.s.PGSQL.65535.lock") >= 100:
        path = Path("/tmp") / f"pgtemplate-{hashlib.sha256(bytes(slot)).hexdigest()[:12]}"
        _clear_foreign(path, run_as.uid if run_as else os.geteuid())
    return private_dir(path, run_as)


def _clear_foreign(path: Path, uid: int) -> None:
    """Root removes a socket dir in /tmp that another OS user owns (an older version's server
    user, ``postgres``); anyone else may not, and is told to."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if info.st_uid == uid:
        return
    if os.geteuid() != 0:
        raise ConfigurationError(f"{path} belongs to another user; delete it")
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _launch(
    binaries: Binaries, data: Path, socket_dir: Path, run_as: RunAs | None
) -> tuple[int, int]:
    """Start the postmaster; returns (pid, port). Retries when another process took the port."""
    log = data.parent / "server.log"
    for _ in range(3):
        port = _free_port()
        write_run_conf(data, port, socket_dir, run_as)
        log.unlink(missing_ok=True)
        args = [binaries.tool("pg_ctl"), "-D", str(data), "-W", "-l", str(log), "start"]
        done = run_program(args, run_as, data.parent)
        ready = done.returncode == 0
        pid = reaper.wait_ready(data, port, log, _READY_TIMEOUT) if ready else None
        if pid is not None:
            return pid, port
        if "could not bind" not in reaper.log_tail(log):
            break
    raise ServerUnavailableError(
        f"PostgreSQL did not start on {data}:\n{done.stdout}{done.stderr}{reaper.log_tail(log)}\n"
        "Fix the cause above, or set pgtemplate_url / PGTEMPLATE_URL to a running server."
    )


def _spawn_reaper(owner_pid: int, data_dir: Path) -> None:
    """Start the slot's reaper through sh, so it is not our child: nothing to reap, no zombie.

    It starts before initdb and ``pg_ctl start``: a run killed while its server comes up
    must leave no postmaster (with the reaper spawned after start-up, 3 kills in 3 did).
    """
    started = reaper.process_started(owner_pid) or ""
    script = [sys.executable, "-I", "-S", str(Path(reaper.__file__))]
    args = [str(owner_pid), started, str(data_dir)]
    subprocess.run(
        ["/bin/sh", "-c", '"$@" &', "pgtemplate-reaper", *script, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        check=True,
        cwd="/",
    )
