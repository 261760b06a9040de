"""Clone time against template size: FILE_COPY with file_copy_method=clone, =copy, and WAL_LOG.

    sudo python benchmarks/clone_size.py --bin-dir /tmp/pgtemplate-pg-binaries/18/bin \\
        [--sizes 10 100 1000] [--rounds 5] [--fsync off on] [--places xfs tmpfs]

Needs root (mount, loop device), ``mkfs.xfs`` (xfsprogs) and PostgreSQL 18 programs
(``.ci/pg-binaries DIR`` unpacks them to ``DIR/18/bin``). It makes a sparse image file,
``mkfs.xfs -m reflink=1``, loop-mounts it, and starts the plugin's own server
(``server/embedded.start``, its tuning: fsync off) with its cache there; ``--places tmpfs`` adds
the same on /dev/shm, which does not reflink. ``--fsync on`` repeats the runs after
``ALTER SYSTEM SET fsync = on`` (a user's durable server). Each template holds ``--sizes`` MB of
seed rows; each timed statement is the plugin's ``CREATE DATABASE ... TEMPLATE ... STRATEGY``
after an untimed CHECKPOINT, then dropped; methods are shuffled per round; medians in ms.
Everything it makes (server, mount, loop device, image) is removed at the end, also on failure.
It never connects to any server but its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from pytest_pgtemplate.server.binaries import find_binaries
from pytest_pgtemplate.server.own import start, stop

METHODS = {
    "WAL_LOG": ("copy", "WAL_LOG"),
    "FILE_COPY, copy": ("copy", "FILE_COPY"),
    "FILE_COPY, clone": ("clone", "FILE_COPY"),
}
_ROW_BYTES = 1000  # one seed row's payload: below TOAST's threshold, so stored as is


@contextmanager
def xfs_mount(size_gb: int) -> Iterator[Path]:
    """A loop-mounted XFS with reflinks in a sparse image under /var/tmp; removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="pgtemplate-clone-bench-", dir="/var/tmp"))
    work.chmod(0o755)  # the server runs as postgres, which must reach its cache inside
    image, mount = work / "xfs.img", work / "mnt"
    mount.mkdir()
    try:
        with image.open("wb") as sparse:
            sparse.truncate(size_gb << 30)
        subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
        try:
            yield mount
        finally:
            unmount(mount)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def unmount(mount: Path) -> None:
    """umount (the loop device goes with it: ``mount -o loop`` sets autoclear); lazy if busy."""
    for _ in range(20):
        if subprocess.run(["umount", str(mount)], check=False).returncode == 0:
            return
        time.sleep(0.5)
    subprocess.run(["umount", "-l", str(mount)], check=False)


@contextmanager
def server_in(cache: Path, bin_dir: str) -> Iterator[str]:
    server = start(find_binaries(bin_dir), cache=cache, owner_pid=os.getpid(), fresh=True)
    try:
        yield server.url
    finally:
        stop(server)


def make_template(admin: psycopg.Connection, name: str, megabytes: int) -> float:
    """A marked template with ``megabytes`` of seed rows; returns its size in MB."""
    admin.execute(f"CREATE DATABASE {name}")
    # info.dsn leaves the password out: the own server asks for it
    url = admin.info.dsn.replace("dbname=postgres", f"dbname={name}")
    with psycopg.connect(url, password=admin.info.password, autocommit=True) as conn:
        rows = megabytes * (1 << 20) // _ROW_BYTES
        conn.execute(
            "CREATE TABLE seed AS SELECT g AS id, md5(g::text) || repeat(md5((g + 1)::text), 30)"
            " AS payload FROM generate_series(1, %s) g",
            (rows,),
        )
    admin.execute(f"ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
    return _size(admin, name)


def time_clone(admin: psycopg.Connection, template: str, method: str, dirty_mb: int) -> float:
    """After a CHECKPOINT, or (``dirty_mb``) after writing that much that is not flushed yet."""
    copy_method, strategy = METHODS[method]
    admin.execute(f"SET file_copy_method = {copy_method}")
    admin.execute("CHECKPOINT")
    if dirty_mb:  # shared buffers a checkpoint must write (a temp table's would not count)
        admin.execute("CREATE TABLE IF NOT EXISTS bench_dirt (id int, payload text)")
        admin.execute(
            "INSERT INTO bench_dirt SELECT g, repeat('x', 1000) FROM generate_series(1, %s) g",
            (dirty_mb * 1000,),
        )
    began = time.perf_counter()
    admin.execute(f"CREATE DATABASE bench_clone TEMPLATE {template} STRATEGY {strategy}")
    elapsed = time.perf_counter() - began
    admin.execute("DROP DATABASE bench_clone")
    return elapsed * 1000


def measure(url: str, sizes: list[int], rounds: int, fsync: str, dirty_mb: int) -> list[list[str]]:
    rows = []
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"ALTER SYSTEM SET fsync = {fsync}")
        admin.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)
        for megabytes in sizes:
            template = f"bench_tpl_{megabytes}"
            size = _size(admin, template) or make_template(admin, template, megabytes)
            times: dict[str, list[float]] = {method: [] for method in METHODS}
            for _ in range(rounds):
                for method in random.sample(list(METHODS), len(METHODS)):
                    times[method].append(time_clone(admin, template, method, dirty_mb))
            medians = [statistics.median(times[method]) for method in METHODS]
            rows.append([f"{size:.0f}", fsync, *(f"{ms:.0f}" for ms in medians)])
    return rows


def _size(admin: psycopg.Connection, name: str) -> float:
    """The database's size in MB, 0 if there is none (the fsync-on pass reuses the templates)."""
    found = admin.execute(
        "SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return (found[0] if found else 0) / (1 << 20)


def table(results: dict[str, list[list[str]]]) -> str:
    header = ["data directory", "template MB", "fsync", *(f"{m} (ms)" for m in METHODS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for place, rows in results.items():
        lines += ["| " + " | ".join([place, *row]) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(bin_dir: str, rounds: int) -> str:
    binaries = find_binaries(bin_dir)
    return (
        f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs, "
        f"kernel {platform.release()}, PostgreSQL {binaries.version}, median of {rounds} rounds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", required=True, help="PostgreSQL 18 bin directory")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fsync", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--dirty-mb", type=int, default=0, help="unflushed writes per clone")
    parser.add_argument("--places", nargs="+", default=["xfs", "tmpfs"], choices=["xfs", "tmpfs"])
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs"):
        raise SystemExit("needs root (mount, loop device) and mkfs.xfs (apt-get install xfsprogs)")
    image_gb = max(4, 3 * max(args.sizes) // 1000 + 3)
    results: dict[str, list[list[str]]] = {}
    for place in args.places:
        with _place(place, image_gb) as cache, server_in(cache, args.bin_dir) as url:
            label = "XFS, reflink=1 (loop)" if place == "xfs" else "tmpfs (/dev/shm)"
            results[label] = [
                row
                for fsync in args.fsync
                for row in measure(url, args.sizes, args.rounds, fsync, args.dirty_mb)
            ]
    print(machine_line(args.bin_dir, args.rounds) + "\n")
    print(table(results))


@contextmanager
def _place(place: str, image_gb: int) -> Iterator[Path]:
    if place == "xfs":
        with xfs_mount(image_gb) as mount:
            yield mount / "cache"
        return
    cache = Path(tempfile.mkdtemp(prefix="pgtemplate-clone-bench-", dir="/dev/shm"))
    cache.chmod(0o755)
    try:
        yield cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
