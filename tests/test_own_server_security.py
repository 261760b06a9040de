"""Issue 20: the plugin's own server lets in the run's own processes, and no other OS user.

Before, the server trusted every local connection: any OS user could connect as ``postgres``
and run ``COPY ... TO PROGRAM`` as the server's OS user, which as root was ``postgres``, the
owner of the machine's main cluster. Here a second OS user, made for the test, tries every way
in while the server is live, with real processes; it is always deleted afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from _intruder import NAME_PREFIX, Intruder, Target, attempts, intruder, remove_user
from _intruder import with_the_password as control
from conftest import InnerProject
from pytest_pgtemplate import ConfigurationError
from pytest_pgtemplate.server import auth
from pytest_pgtemplate.server.binaries import find_binaries
from pytest_pgtemplate.server.osuser import ensure_os_user
from pytest_pgtemplate.server.own import OwnServer, stop, stop_data_dir
from pytest_pgtemplate.server.per_run import LocalServerRequest, start_now

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: only root can create a second OS user to try to get in"
)
TRUST_ERA_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
"""What an older version's cluster allowed (``initdb --auth=trust``)."""


@pytest.fixture
def cache() -> Iterator[Path]:
    """A cache of its own on tmpfs, 0755 as the server's OS user must pass through it (pytest's
    ``tmp_path`` is under a 0700 directory); no server from it outlives the test."""
    shm = Path("/dev/shm")
    base = shm if os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    path = Path(tempfile.mkdtemp(prefix="pgtemplate-security-", dir=base))
    path.chmod(0o755)
    yield path
    for data_dir in path.glob("*/slot*/data"):
        stop_data_dir(data_dir)
    shutil.rmtree(path)


@pytest.fixture
def other_user() -> Iterator[Intruder]:
    with intruder() as made:
        yield made


@pytest.fixture(scope="module")
def psql() -> str:
    program = find_binaries(None).bin_dir / "psql"
    if not program.exists():
        pytest.skip(f"no psql next to the server programs ({program.parent})")
    return str(program)


def _start(cache: Path, *, fresh: bool = False) -> OwnServer:
    return start_now(LocalServerRequest(os.getpid(), None, cache, fresh))


def _select_one(server: OwnServer) -> int:
    with psycopg.connect(server.url, autocommit=True) as conn:
        row = conn.execute("SELECT 1").fetchone()
    return int(row[0]) if row else 0


def _assert_refused(tries: dict[str, list[object]]) -> None:
    """Each of the four ways in failed, and for the reason that protects the server."""
    for name, expected in {
        "tcp": "no password supplied",
        "socket": "Permission denied",
        "data_dir": "Permission denied",
        "password_file": "Permission denied",
    }.items():
        status, output = tries[name]
        assert status != 0, f"{name} got in: {output}"
        assert expected in str(output), f"{name}: {output}"


def _mode(path: Path) -> tuple[int, str]:
    info = path.stat()
    return stat.S_IMODE(info.st_mode), pwd.getpwuid(info.st_uid).pw_name


@needs_root
def test_another_os_user_cannot_get_in(cache: Path, other_user: Intruder, psql: str) -> None:
    server = _start(cache)
    try:
        target = Target.live_in(cache)
        _assert_refused(attempts(other_user, psql, target))
        assert control(other_user, psql, target, server.password) == "1"
        assert target.os_uids() == {pwd.getpwnam("pgtemplate").pw_uid}
        assert server.os_user == "pgtemplate"
        assert _mode(server.data_dir) == (0o700, "pgtemplate")
        assert _mode(server.data_dir.parent) == (0o700, "pgtemplate")
        assert _mode(server.socket_dir) == (0o700, "pgtemplate")
        assert _mode(server.password_file) == (0o600, "root")  # not the server's OS user's
        assert (server.data_dir / "pg_hba.conf").read_text() == auth.HBA
        slot = server.data_dir.parent  # everything in it the server's OS user may read
        environ = Path(f"/proc/{server.pid}/environ").read_text(errors="replace")
        for readable in (environ, (slot / "owner.json").read_text(), server.log_file.read_text()):
            assert server.password not in readable
        assert server.password not in repr(server)
    finally:
        stop(server)


INNER_TESTS = """
    import json
    import os
    from pathlib import Path

    import pytest
    from sqlalchemy import text

    from _intruder import Intruder, Target, attempts

    def test_another_os_user_is_refused_while_the_run_is_live(pg_server):
        target = Target.live_in(Path(os.environ["PGTX_CACHE"]))
        found = attempts(Intruder.from_env(), os.environ["PGTX_PSQL"], target)
        found["uids"] = sorted(target.os_uids())
        Path(os.environ["PGTX_RESULTS"]).write_text(json.dumps(found))

    @pytest.mark.parametrize("n", range(3))
    async def test_the_runs_own_processes_get_in(pg_session, n):
        assert await pg_session.scalar(text("SELECT current_user")) == "postgres"
"""


@needs_root
def test_an_inner_run_on_its_own_server_lets_no_other_user_in(
    project: InnerProject,
    cache: Path,
    other_user: Intruder,
    psql: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real ``pytest -n 2`` with no pgtemplate_url; a test in it makes the attempts."""
    results = project.path / "attempts.json"
    for name, value in {**other_user.env(), "PGTX_PSQL": psql, "PGTX_CACHE": str(cache)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PGTX_RESULTS", str(results))
    shutil.copy(Path(__file__).with_name("_intruder.py"), project.path / "_intruder.py")
    project.write_ini(
        pgtemplate_cache_dir=str(cache),
        asyncio_mode="auto",
        asyncio_default_fixture_loop_scope="function",
    )
    project.write_tests(INNER_TESTS)
    result = project.run("-n", "2")
    result.assert_outcomes(passed=4)
    found = json.loads(results.read_text())
    _assert_refused(found)
    assert found["uids"] == [pwd.getpwnam("pgtemplate").pw_uid]
    [password_file] = cache.glob("*/slot0.password")
    password = password_file.read_text().strip()
    output = "\n".join(result.outlines + result.errlines)
    assert len(password) >= 32
    assert password not in output
    result.stdout.fnmatch_lines(["pgtemplate: own PostgreSQL * at postgresql://postgres:*"])
    assert "postgresql://postgres:***@127.0.0.1:" in output  # the header's, masked


def test_a_warm_start_reuses_the_cluster_and_its_password(cache: Path) -> None:
    first = _start(cache)
    stop(first)
    second = _start(cache)
    try:
        assert (second.warm, second.data_dir) == (True, first.data_dir)
        assert second.password == first.password
        assert _select_one(second) == 1
        assert _mode(second.password_file)[0] == 0o600
    finally:
        stop(second)
    fresh = _start(cache, fresh=True)
    try:
        assert not fresh.warm
        assert fresh.password != first.password
        assert auth.read_password(fresh.data_dir.parent) == fresh.password
    finally:
        stop(fresh)


@pytest.mark.parametrize(
    "older", ["trust in pg_hba.conf", "no password file", "password file others may read"]
)
def test_a_cluster_that_may_let_others_in_is_rebuilt(cache: Path, older: str) -> None:
    """An older version's cluster trusted everyone and had no password file: never reused."""
    first = _start(cache)
    stop(first)
    if older == "trust in pg_hba.conf":
        (first.data_dir / "pg_hba.conf").write_text(TRUST_ERA_HBA)
    elif older == "no password file":
        first.password_file.unlink()
    else:
        first.password_file.chmod(0o644)
    server = _start(cache)
    try:
        assert not server.warm
        assert server.password != first.password
        assert (server.data_dir / "pg_hba.conf").read_text() == auth.HBA
        assert _mode(server.password_file)[0] == 0o600
        assert _select_one(server) == 1
    finally:
        stop(server)


@needs_root
def test_a_data_dir_an_older_version_ran_as_postgres_is_rebuilt(cache: Path) -> None:
    """Older versions ran root's server as ``postgres``: such a slot is taken over, its data
    directory removed and made again by ``pgtemplate``."""
    first = _start(cache)
    stop(first)
    postgres = pwd.getpwnam("postgres") if "postgres" in _users() else pwd.getpwnam("nobody")
    owner = f"{postgres.pw_uid}:{postgres.pw_gid}"
    subprocess.run(["chown", "-R", owner, str(first.data_dir.parent)], check=True)
    server = _start(cache)
    try:
        assert not server.warm
        assert _mode(server.data_dir) == (0o700, "pgtemplate")
        assert _mode(server.data_dir.parent) == (0o700, "pgtemplate")
        assert _select_one(server) == 1
    finally:
        stop(server)


def _users() -> set[str]:
    return {entry.pw_name for entry in pwd.getpwall()}


RACE_TO_CREATE = """
import sys
from pytest_pgtemplate.server.osuser import ensure_os_user
print(ensure_os_user(sys.argv[1]).pw_uid)
"""


@needs_root
def test_racing_runs_create_the_server_os_user_once() -> None:
    """The first runs on a machine race to create the user: all of them get it, none fails."""
    name = NAME_PREFIX + os.urandom(4).hex()
    try:
        args = [sys.executable, "-c", RACE_TO_CREATE, name]
        racers = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(4)]
        uids = {racer.communicate(timeout=120)[0].strip() for racer in racers}
        assert [racer.returncode for racer in racers] == [0] * 4
        entry = pwd.getpwnam(name)
        assert uids == {str(entry.pw_uid)}
        assert (entry.pw_dir, Path(entry.pw_shell).name) == ("/nonexistent", "nologin")
        assert not Path(entry.pw_dir).exists()
    finally:
        if name in _users():
            remove_user(name)


@needs_root
def test_an_os_user_that_cannot_be_created_is_an_error_naming_the_fixes() -> None:
    name = f"{NAME_PREFIX}not valid"  # useradd refuses the space
    with pytest.raises(ConfigurationError) as error:
        ensure_os_user(name)
    message = str(error.value)
    assert "could not be created (useradd: " in message
    for fix in (
        "Create it by hand (useradd --system",
        "run pytest as a normal user",
        "pgtemplate_url",
    ):
        assert fix in message
    assert name not in _users()
