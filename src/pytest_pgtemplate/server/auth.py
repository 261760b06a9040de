"""Who may connect to the plugin's own server: whoever holds its password, which only the run has.

Each cluster gets a random superuser password at initdb, handed to initdb in a file that is
removed right after. It is kept next to the cluster's slot, in ``slot<N>.password``: mode 0600,
owned by whoever runs pytest, so when that is root the server's OS user (``pgtemplate``) may not
read it. ``pg_hba.conf`` allows SCRAM connections only, over the unix socket (in a 0700 directory
of the server's OS user) and over 127.0.0.1, and is rewritten at every start. Before this, the
plugin made clusters with trust auth, which let any local OS user in as the superuser: a cluster
without a password file, or whose ``pg_hba.conf`` lets anything in without one, is rebuilt.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .osuser import RunAs, write_owned

METHOD = "scram-sha-256"
HBA = (
    "# Written by pytest-pgtemplate at every start: every connection needs the password.\n"
    f"local all all {METHOD}\n"
    f"host all all 127.0.0.1/32 {METHOD}\n"
)


def password_file(slot: Path) -> Path:
    """Next to the slot, not in it: the slot belongs to the server's OS user, this to us."""
    return slot.with_name(f"{slot.name}.password")


def read_password(slot: Path) -> str | None:
    """The slot's cluster's password; ``None`` when its file is missing or not ours alone.

    Opened without following a symlink (nor waiting on a FIFO), and trusted only if it is a
    plain file of ours that no one else may read: else the password may be known, and the
    cluster is rebuilt.
    """
    try:
        fd = os.open(password_file(slot), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd) as handle:
        info = os.fstat(fd)
        ours = info.st_uid == os.geteuid() and not info.st_mode & 0o077
        password = handle.read().strip() if ours and stat.S_ISREG(info.st_mode) else ""
    return password or None


def new_password(slot: Path) -> str:
    """A new random password for the slot's next cluster, saved in its password file."""
    password = secrets.token_urlsafe(24)
    write_owned(password_file(slot), password + "\n", None)
    return password


@contextmanager
def initdb_password_file(slot: Path, password: str, run_as: RunAs | None) -> Iterator[Path]:
    """``password`` for ``initdb --pwfile`` (initdb runs as ``run_as``); removed right after."""
    path = slot / f"initdb-password.{os.getpid()}"
    write_owned(path, password + "\n", run_as)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def write_hba(data: Path, run_as: RunAs | None) -> None:
    """Every start: whatever the file says now (edited by hand, an older version's), SCRAM only."""
    write_owned(data / "pg_hba.conf", HBA, run_as)


def hba_needs_password(data: Path) -> bool:
    """Whether every rule in ``data``'s ``pg_hba.conf`` asks for the password (no trust, peer...).

    A rule this does not understand counts as one that does not: the cluster is then rebuilt.
    """
    try:
        text = (data / "pg_hba.conf").read_text()
    except OSError:
        return False
    rules = [line.split("#", 1)[0].split() for line in text.splitlines()]
    return {_method(rule) for rule in rules if rule} == {METHOD}


def _method(rule: list[str]) -> str:
    """The auth method of a ``local`` or ``host`` rule in ``type database user [address]`` form."""
    at = 3 if rule[0] == "local" else 4
    return rule[at] if len(rule) > at else ""
