"""How worker databases are cloned, and that the end-of-run line says which way and why.

PostgreSQL 18's ``file_copy_method = clone`` is used only on evidence that the data directory
is on this machine and reflinks. The reflink run needs root, mkfs.xfs, a loop device and the
PostgreSQL 18 programs of ``.ci/pg-binaries DIR`` (``PGTEMPLATE_TEST_PG_BINARIES=DIR``); without
any of them it is skipped, and the skip says which is missing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from _harness import new_role_password, with_user
from conftest import InnerProject
from pytest_pgtemplate.databases import clone_options
from pytest_pgtemplate.server.admin import ServerInfo, connect, describe
from pytest_pgtemplate.server.binaries import find_binaries
from pytest_pgtemplate.server.own import start, stop_data_dir
from pytest_pgtemplate.server.reflink import check, probe, read_system_identifier

BINARIES_ENV = "PGTEMPLATE_TEST_PG_BINARIES"

USES_THE_DATABASE = """
    import pytest
    from sqlalchemy import text

    @pytest.mark.parametrize("n", range(4))
    async def test_seeded(pg_session, n):
        assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
"""


def server(major: int, *, fsync: bool, reflink: bool = False, note: str = "") -> ServerInfo:
    return ServerInfo(
        url="postgresql://postgres@127.0.0.1:5432/postgres",
        version=f"PostgreSQL {major}.1",
        version_num=major * 10000 + 1,
        started_by_plugin=True,
        superuser=True,
        fsync=fsync,
        reflink=reflink,
        reflink_note=note,
    )


CHOICES = {  # (major, fsync, reflink evidence): (strategy, file_copy_method, end-of-run text)
    (14, False, True): (None, None, "PostgreSQL 14 has no STRATEGY"),
    (15, False, True): ("FILE_COPY", None, "FILE_COPY, fsync off"),
    (15, True, True): ("WAL_LOG", None, "WAL_LOG, fsync on: fewer checkpoints"),
    (18, False, True): (
        "FILE_COPY",
        "clone",
        "FILE_COPY, fsync off, file_copy_method=clone: xfs reflinks",
    ),
    (18, False, False): (
        "FILE_COPY",
        "copy",
        "FILE_COPY, fsync off; no file_copy_method=clone: tmpfs does not reflink",
    ),
    (18, True, True): (
        "WAL_LOG",
        "copy",
        "WAL_LOG, fsync on: fewer checkpoints; no file_copy_method=clone: xfs reflinks, "
        "but fsync on and 19 MB",
    ),
    (18, True, False): (
        "WAL_LOG",
        "copy",
        "WAL_LOG, fsync on: fewer checkpoints; no file_copy_method=clone: tmpfs does not reflink",
    ),
}


@pytest.mark.parametrize("case", CHOICES, ids=lambda case: "pg{}-fsync{}-reflink{}".format(*case))
def test_choice_by_major_fsync_and_reflink_evidence(case: tuple[int, bool, bool]) -> None:
    major, fsync, reflink = case
    note = "xfs reflinks" if reflink else "tmpfs does not reflink"
    options = clone_options(
        server(major, fsync=fsync, reflink=reflink, note=note),
        durable=False,
        template_bytes=19 << 20,
    )
    assert (options.strategy, options.file_copy_method, options.describe()) == CHOICES[case]


def test_with_fsync_on_a_large_template_is_cloned_and_a_small_one_is_not() -> None:
    evidence = server(18, fsync=True, reflink=True, note="xfs reflinks")
    large = clone_options(evidence, durable=False, template_bytes=1178 << 20)
    assert (large.strategy, large.file_copy_method) == ("FILE_COPY", "clone")
    assert large.describe() == "FILE_COPY, fsync on, file_copy_method=clone: xfs reflinks, " + (
        "template 1178 MB"
    )
    for small in (511 << 20, None):
        options = clone_options(evidence, durable=False, template_bytes=small)
        assert (options.strategy, options.file_copy_method) == ("WAL_LOG", "copy")


def test_a_server_whose_data_directory_is_elsewhere_gets_no_clone(tmp_path: Path) -> None:
    assert check(None, None).reason == "data directory not visible to this role"
    assert not check(str(tmp_path / "nowhere"), 42).supported
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes((7).to_bytes(8, "little") + bytes(8))
    if read_system_identifier(tmp_path) != 7:
        pytest.skip("a big-endian machine")
    elsewhere = check(str(tmp_path), 8)  # same path, another cluster (a container's, say)
    assert elsewhere == type(elsewhere)(False, "data directory not on this machine")
    assert check(str(tmp_path), 7) == probe(tmp_path)


def test_tmpfs_does_not_reflink() -> None:
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    assert probe(Path("/dev/shm")) == type(probe(Path("/dev/shm")))(False, "tmpfs does not reflink")


def _pg18() -> Path | str:
    """Read at import: the ``project`` fixture clears PGTEMPLATE_* for the inner run."""
    root = os.environ.get(BINARIES_ENV)
    if not root:
        return f"no PostgreSQL 18: set {BINARIES_ENV}=DIR after `.ci/pg-binaries DIR`"
    bin_dir = Path(root) / "18" / "bin"
    if not (bin_dir / "postgres").exists():
        return f"no PostgreSQL 18 in {BINARIES_ENV}={root}: run `.ci/pg-binaries {root}`"
    return bin_dir


PG18 = _pg18()


def pg18_bin_dir() -> Path:
    if isinstance(PG18, str):
        pytest.skip(PG18)
    return PG18


@pytest.fixture
def xfs_cache() -> Iterator[Path]:
    """A cache directory on a loop-mounted XFS with reflinks; unmounted and removed after."""
    pg18_bin_dir()  # skip before mounting anything
    if os.geteuid() != 0:
        pytest.skip("a reflink file system needs root to mount (loop device)")
    if not shutil.which("mkfs.xfs"):
        pytest.skip("no mkfs.xfs (apt-get install xfsprogs)")
    if not Path("/dev/loop-control").exists():
        pytest.skip("no loop devices (/dev/loop-control missing)")
    work = Path(tempfile.mkdtemp(prefix="pgtemplate-xfs-", dir="/var/tmp"))
    work.chmod(0o755)  # the server runs as postgres, which must reach its cache
    image, mount = work / "xfs.img", work / "mnt"
    mount.mkdir()
    try:
        with image.open("wb") as sparse:
            sparse.truncate(1 << 30)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
        mounted = subprocess.run(
            ["mount", "-o", "loop", str(image), str(mount)],
            check=False,
            capture_output=True,
            text=True,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot loop-mount an XFS image here: {mounted.stderr.strip()}")
        try:
            yield mount / "cache"
        finally:
            stop_servers(mount / "cache")
            unmount(mount)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def tmpfs_cache() -> Iterator[Path]:
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm (tmpfs)")
    path = Path("/dev/shm") / f"pgtemplate-clone-{uuid.uuid4().hex[:8]}"
    yield path
    stop_servers(path)
    shutil.rmtree(path, ignore_errors=True)


def unmount(mount: Path) -> None:
    """A stopped server's reaper may still hold the mount for a moment; autoclear frees the loop."""
    for _ in range(50):
        if subprocess.run(["umount", str(mount)], check=False, capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


def stop_servers(cache: Path) -> None:
    for data_dir in cache.glob("*/slot*/data"):
        stop_data_dir(data_dir)


def run_on_pg18(project: InnerProject, cache: Path) -> pytest.RunResult:
    project.write_ini(
        pgtemplate_bin_dir=str(pg18_bin_dir()),
        pgtemplate_cache_dir=str(cache),
        asyncio_mode="auto",
        asyncio_default_fixture_loop_scope="function",
    )
    project.write_tests(USES_THE_DATABASE)
    result = project.run("-n", "2")
    result.assert_outcomes(passed=4)
    print(*[line for line in result.outlines if line.startswith("pgtemplate: ")], sep="\n")
    return result


def test_own_server_on_a_reflink_file_system_clones(project: InnerProject, xfs_cache: Path) -> None:
    result = run_on_pg18(project, xfs_cache)
    result.stdout.fnmatch_lines(
        [
            "pgtemplate: own PostgreSQL 18.* worker database(s) cloned (avg * ms, "
            "FILE_COPY, fsync off, file_copy_method=clone: xfs reflinks) and dropped*"
        ]
    )


def test_own_server_on_tmpfs_says_why_it_does_not_clone(
    project: InnerProject, tmpfs_cache: Path
) -> None:
    result = run_on_pg18(project, tmpfs_cache)
    result.stdout.fnmatch_lines(
        [
            "pgtemplate: own PostgreSQL 18.* worker database(s) cloned (avg * ms, "
            "FILE_COPY, fsync off; no file_copy_method=clone: tmpfs does not reflink) and dropped*"
        ]
    )


def test_describe_proves_locality_and_hides_nothing_from_a_plain_role(tmpfs_cache: Path) -> None:
    """A role that may not read data_directory gets no clone, and the line says so."""
    started = start(find_binaries(str(pg18_bin_dir())), cache=tmpfs_cache, owner_pid=os.getpid())
    role, password = f"pgt_plain_{uuid.uuid4().hex[:6]}", new_role_password()
    with psycopg.connect(started.url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
    as_super = asyncio.run(_describe(started.url))
    as_plain = asyncio.run(_describe(with_user(started.url, role, password)))
    assert (as_super.reflink, as_super.reflink_note) == (False, "tmpfs does not reflink")
    assert as_plain.reflink_note == "data directory not visible to this role"


async def _describe(url: str) -> ServerInfo:
    parsed = make_url(url)
    conn = await connect(parsed, 10)
    try:
        return await describe(conn, parsed, started=True)
    finally:
        await conn.close()


def test_with_fsync_on_the_templates_size_decides_and_the_line_names_it(
    project: InnerProject, xfs_cache: Path
) -> None:
    """A durable server on XFS: the size is read (not "size unknown") and a small one is copied."""
    started = start(find_binaries(str(pg18_bin_dir())), cache=xfs_cache, owner_pid=os.getpid())
    with psycopg.connect(started.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = on")
        conn.execute("SELECT pg_reload_conf()")
    project.add_ini(pgtemplate_url=started.url)
    project.write_tests(USES_THE_DATABASE)
    result = project.run("-n", "2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "pgtemplate: PostgreSQL at * worker database(s) cloned (avg * ms, WAL_LOG, fsync on: "
            "fewer checkpoints; no file_copy_method=clone: xfs reflinks, but fsync on and "
            "[0-9]* MB) and dropped*"
        ]
    )
