"""Whether a server's data directory clones files copy-on-write (reflink), proved on the spot.

PostgreSQL 18's ``file_copy_method = clone`` makes ``STRATEGY FILE_COPY`` use
``copy_file_range``, which shares extents instead of copying them on XFS (``reflink=1``) and
Btrfs. The plugin uses it only on evidence: the data directory the server reports must be the
one on this machine (its ``global/pg_control`` holds the server's system identifier), and a
``FICLONE`` of a scratch file in it must succeed. The scratch files are ``O_TMPFILE``: they have
no name, so nothing is left in the data directory even if the process is killed mid-probe.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
_NO_REFLINK = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS})


@dataclass(frozen=True)
class Reflink:
    """``supported``, and why (the file system that reflinks, or why clone is not used)."""

    supported: bool
    reason: str


def check(data_directory: str | None, system_identifier: int | None) -> Reflink:
    """Evidence that the server's data directory is here and reflinks; the first gap otherwise."""
    if not data_directory or system_identifier is None:
        return Reflink(False, "data directory not visible to this role")
    path = Path(data_directory)
    local = read_system_identifier(path)
    if local is None:
        return Reflink(False, "data directory not on this machine (or not readable)")
    if local != system_identifier % (1 << 64):  # PostgreSQL shows the uint64 as a bigint
        return Reflink(False, "data directory not on this machine")
    return probe(path)


def read_system_identifier(data_dir: Path) -> int | None:
    """The first field of ``global/pg_control``, a uint64 in the machine's byte order."""
    try:
        with (data_dir / "global" / "pg_control").open("rb") as control:
            head = control.read(8)
    except OSError:
        return None
    return int(struct.unpack("=Q", head)[0]) if len(head) == 8 else None


def probe(directory: Path) -> Reflink:
    """FICLONE one unnamed scratch file onto another in ``directory``."""
    kind = filesystem_type(directory)
    try:
        _clone_scratch(directory)
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return Reflink(False, f"{kind} does not reflink")
        return Reflink(False, f"cannot probe the data directory on {kind} ({exc.strerror})")
    return Reflink(True, f"{kind} reflinks")


def _clone_scratch(directory: Path) -> None:
    source = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
    try:
        os.write(source, b"pgtemplate" * 410)
        target = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
        try:
            fcntl.ioctl(target, FICLONE, source)
        finally:
            os.close(target)
    finally:
        os.close(source)


def filesystem_type(path: Path) -> str:
    """The type of the mount holding ``path`` (``/proc/self/mounts``), for the report."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return "this file system"
    resolved = str(path.resolve())
    best, kind = -1, "this file system"
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > best:
            best, kind = len(mount), fields[2]
    return kind
