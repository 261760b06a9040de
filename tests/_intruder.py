"""A second local OS user, made for one test, who tries every way into the plugin's own server.

Only root can make one (``useradd``); ``intruder()`` removes it again (``userdel``), pass or fail.
Inner runs import this module too (a test copies it into the inner project): the attempts are
then made while that run and its server are live.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pytest_pgtemplate.server.auth import password_file
from pytest_pgtemplate.server.reaper import read_pidfile

NAME_PREFIX = "pgtx_"


@dataclass(frozen=True)
class Intruder:
    name: str
    uid: int
    gid: int

    @classmethod
    def from_env(cls) -> Intruder:
        """The one the outer test made, as it told an inner run (``PGTX_*``)."""
        env = os.environ
        return cls(env["PGTX_NAME"], int(env["PGTX_UID"]), int(env["PGTX_GID"]))

    def env(self) -> dict[str, str]:
        return {"PGTX_NAME": self.name, "PGTX_UID": str(self.uid), "PGTX_GID": str(self.gid)}

    def run(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        """``args`` as this user, in no group of ours and with none of our environment (the
        suite's own holds its server's URL, password included)."""
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
        return subprocess.run(
            list(args),
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env={**env, "PGPASSWORD": password} if password else env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@dataclass(frozen=True)
class Target:
    """Where the plugin's own server can be reached, and its files."""

    pid: int
    port: int
    socket_dir: Path
    data_dir: Path

    @property
    def password_file(self) -> Path:
        return password_file(self.data_dir.parent)

    @classmethod
    def live_in(cls, cache: Path) -> Target:
        """The one server running from ``cache``, from its ``postmaster.pid``."""
        [pidfile] = cache.glob("*/slot*/data/postmaster.pid")
        lines = read_pidfile(pidfile.parent)
        return cls(int(lines[0]), int(lines[3]), Path(lines[4]), pidfile.parent)

    def os_uids(self) -> set[int]:
        """The postmaster's real, effective, saved and filesystem uids (``/proc/<pid>/status``)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        [line] = [line for line in status.splitlines() if line.startswith("Uid:")]
        return {int(uid) for uid in line.split()[1:]}


def attempts(intruder: Intruder, psql: str, target: Target) -> dict[str, list[object]]:
    """Each way in, as ``intruder``, without the password: ``name -> [exit status, output]``."""
    connect = [psql, "-w", "-X", "-At", "-U", "postgres", "-d", "postgres"]
    connect += ["-p", str(target.port), "-c", "SELECT current_user"]
    tries = {
        "tcp": intruder.run(*connect, "-h", "127.0.0.1"),
        "socket": intruder.run(*connect, "-h", str(target.socket_dir)),
        "data_dir": intruder.run("ls", str(target.data_dir)),
        "password_file": intruder.run("cat", str(target.password_file)),
    }
    return {name: [done.returncode, done.stdout + done.stderr] for name, done in tries.items()}


def with_the_password(intruder: Intruder, psql: str, target: Target, password: str) -> str:
    """The control: over TCP with the password, it gets in (so the refusals are the auth's)."""
    connect = [psql, "-w", "-X", "-At", "-U", "postgres", "-d", "postgres", "-h", "127.0.0.1"]
    done = intruder.run(*connect, "-p", str(target.port), "-c", "SELECT 1", password=password)
    return done.stdout.strip() or done.stderr.strip()


@contextmanager
def intruder() -> Iterator[Intruder]:
    """A new OS user with no home and no login shell; deleted afterwards, even on failure."""
    name = NAME_PREFIX + secrets.token_hex(4)
    args = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    try:
        entry = pwd.getpwnam(name)
        yield Intruder(name, entry.pw_uid, entry.pw_gid)
    finally:
        remove_user(name)


def remove_user(name: str) -> None:
    """``userdel`` (its group goes with it); fails loudly if the user stays."""
    args = ["userdel", name]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0 and name in {entry.pw_name for entry in pwd.getpwall()}:
        raise AssertionError(f"userdel {name} failed: {done.stderr.strip()}")
