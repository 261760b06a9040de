"""The ``pgtemplate`` command, run for real (``python -m pytest_pgtemplate``) against the server.

The server is shared: every database listed here is one this module created, under a project
name unique to the test, and dropped at the end whatever happens; ``gc`` always runs scoped to
that project (or to a run id of ours), never plain, which would drop anybody's dead databases.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from _harness import suite_cache
from conftest import InnerProject
from pytest_pgtemplate._version import __version__
from pytest_pgtemplate.naming import DatabaseTag
from pytest_pgtemplate.server import auth, reaper
from pytest_pgtemplate.server.cache import cache_root
from pytest_pgtemplate.server.own import OwnServer, stop
from pytest_pgtemplate.server.per_run import LocalServerRequest, start_now
from pytest_pgtemplate.sweep import LIVENESS_CLASS, TEMPLATE_USE_CLASS, lock_key

CREATED = "2026-01-01T00:00:00+00:00"


@pytest.fixture
def url(server_url: str) -> str:
    """The test server: the harness's own, or the one PGTEMPLATE_TEST_URL names."""
    return server_url


@dataclass
class Fakes:
    """Databases with the plugin's marker, made by this test only, dropped at its end."""

    admin: psycopg.Connection
    url: str
    project: str = field(default_factory=lambda: f"clitest_{uuid.uuid4().hex[:10]}")
    names: list[str] = field(default_factory=list)
    holders: list[psycopg.Connection] = field(default_factory=list)
    doomed: dict[str, psycopg.Connection] = field(default_factory=dict)

    def create(self, name: str, marker: DatabaseTag) -> str:
        self.names.append(name)
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{marker.to_comment()}'")
        return name

    def worker(self, run: str, project: str | None = None, *, alive: bool = False) -> str:
        name = f"pgtemplate_{run}_gw0"
        marker = DatabaseTag(
            "worker", run_id=run, owner=name, project=project or self.project, created=CREATED
        )
        self.create(name, marker)
        holder = self.hold("pg_advisory_lock", LIVENESS_CLASS, name)
        if not alive:
            self.doomed[name] = holder
        return name

    def kill(self, *names: str) -> None:
        """End the runs of these workers made ``alive=False`` (default: all of them).

        Until then they are alive: a dead worker database is garbage to every run's sweep on
        the shared server (and to anybody's plain ``gc``), so tests kill theirs only right
        before the command that must see them dead.
        """
        for name in names or list(self.doomed):
            self.doomed.pop(name).close()

    def template(self, *, alive: bool = False) -> str:
        fingerprint = uuid.uuid4().hex[:20]
        name = self.create(
            f"pgtemplate_tpl_{fingerprint}",
            DatabaseTag("template", fingerprint=fingerprint, project=self.project, created=CREATED),
        )
        # finished, as a build's last step leaves it (an unfinished one is an abandoned build)
        self.admin.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
        if alive:
            self.hold("pg_advisory_lock_shared", TEMPLATE_USE_CLASS, name)
        return name

    def kept(self, run: str, project: str | None = None) -> str:
        """A --pgtemplate-keep-failed copy: no sweep drops it, only ``gc --kept``."""
        name = f"pgtemplate_{run}_gw0_failed1"
        marker = DatabaseTag(
            "kept",
            run_id=run,
            owner=f"pgtemplate_{run}_gw0",
            project=project or self.project,
            created=CREATED,
        )
        return self.create(name, marker)

    def hold(self, function: str, lock_class: int, name: str) -> psycopg.Connection:
        """What a live run does: a session on the server holds the database's lock."""
        holder = psycopg.connect(self.url, autocommit=True)
        self.holders.append(holder)
        holder.execute(f"SELECT {function}(%s, %s)", (lock_class, lock_key(name)))
        return holder

    def existing(self) -> set[str]:
        rows = self.admin.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (self.names,)
        )
        return {row[0] for row in rows}

    def cleanup(self) -> None:
        for holder in self.holders:
            holder.close()
        for name in self.existing():  # only our own, which nobody else drops meanwhile
            if name.startswith("pgtemplate_tpl_"):
                self.admin.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fakes(admin: psycopg.Connection, url: str) -> Iterator[Fakes]:
    made = Fakes(admin, url)
    try:
        yield made
    finally:
        made.cleanup()


def run_id() -> str:
    return uuid.uuid4().hex[:12]


def cli(
    *args: str, cwd: Path, url: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The real command; the environment names no server or project unless ``url`` is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTEMPLATE_")}
    if url is not None:
        env["PGTEMPLATE_URL"] = url
    done = subprocess.run(
        [sys.executable, "-m", "pytest_pgtemplate", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
    return done


Rows = dict[str, dict[str, object]]


def as_json(done: subprocess.CompletedProcess[str]) -> Rows:
    return {row["name"]: row for row in json.loads(done.stdout)}


def test_options_go_before_or_after_the_subcommand(fakes: Fakes, url: str, tmp_path: Path) -> None:
    kept = fakes.kept(run_id())
    after = cli("list", "--url", url, "--json", "--project", fakes.project, cwd=tmp_path)
    before = cli("--url", url, "--json", "--project", fakes.project, "list", cwd=tmp_path)
    mixed = cli("--url", url, "list", "--json", f"--project={fakes.project}", cwd=tmp_path)
    assert set(as_json(after)) == set(as_json(before)) == set(as_json(mixed)) == {kept}
    for args in (
        ("gc", "--url", url, "--kept", "--dry-run", "--json", "--project", fakes.project),
        ("--url", url, "--dry-run", "--json", "--project", fakes.project, "gc", "--kept"),
        ("--kept", "--dry-run", "gc", "--json", "--url", url, "--project", fakes.project),
    ):
        assert set(as_json(cli(*args, cwd=tmp_path))) == {kept}
    assert kept in fakes.existing(), "--dry-run drops nothing"


def test_gc_options_are_refused_for_list_in_one_line(tmp_path: Path, url: str) -> None:
    done = cli("--dry-run", "list", cwd=tmp_path, url=url, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "--dry-run, --kept and --templates apply to gc only" in done.stderr


def test_a_reader_that_goes_away_ends_the_listing_quietly(
    fakes: Fakes, url: str, tmp_path: Path
) -> None:
    fakes.worker(run_id())
    command = f"{sys.executable} -m pytest_pgtemplate list | head -c1"
    done = subprocess.run(
        ["sh", "-c", command],
        cwd=tmp_path,
        env={**os.environ, "PGTEMPLATE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr, len(done.stdout)) == (0, "", 1)
    # Deterministic: the pipe's reader is gone before the command writes anything.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        closed = subprocess.run(
            [sys.executable, "-m", "pytest_pgtemplate", "list"],
            cwd=tmp_path,
            env={**os.environ, "PGTEMPLATE_URL": url},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert closed.stderr == ""
    assert closed.returncode == 141, "like a program ended by SIGPIPE"


def test_json_has_booleans_numbers_and_nulls(fakes: Fakes, url: str, tmp_path: Path) -> None:
    live, kept = fakes.worker(run_id(), alive=True), fakes.kept(run_id())
    unused, cloned = fakes.template(), fakes.template(alive=True)
    rows = as_json(cli("list", "--json", "--project", fakes.project, cwd=tmp_path, url=url))
    assert {name: row["alive"] for name, row in rows.items()} == {
        live: True,
        kept: False,
        unused: False,
        cloned: True,  # a live run clones it
    }
    for row in rows.values():
        assert row["project"] == fakes.project
        assert isinstance(row["size_bytes"], int)
        assert row["size_bytes"] > 0
        assert isinstance(row["size_mb"], float)
        assert row["created"] == CREATED
        assert isinstance(row["age_seconds"], int)
    assert rows[unused]["run"] is None
    assert rows[kept]["run"] == kept.split("_")[1]


def test_list_shows_each_database_project(fakes: Fakes, url: str, tmp_path: Path) -> None:
    other = f"{fakes.project}_other"
    mine, theirs = fakes.worker(run_id()), fakes.worker(run_id(), project=other)
    lines = cli("list", cwd=tmp_path, url=url).stdout.splitlines()
    assert lines[0].split() == [
        "NAME", "PROJECT", "KIND", "RUN", "TEMPLATE", "ALIVE", "SIZE_MB", "AGE"
    ]  # fmt: skip
    cells = {line.split()[0]: line.split() for line in lines[1:]}
    assert cells[mine][1:3] == [fakes.project, "worker"]
    assert cells[theirs][1:3] == [other, "worker"]
    scoped = cli("list", "--project", other, cwd=tmp_path, url=url).stdout
    assert theirs in scoped
    assert mine not in scoped


def test_gc_dry_run_shows_the_sizes_list_shows(fakes: Fakes, url: str, tmp_path: Path) -> None:
    kept = fakes.kept(run_id())
    scope = ("--project", fakes.project)
    listed = as_json(cli("list", "--json", *scope, cwd=tmp_path, url=url))[kept]
    dry = as_json(cli("gc", "--kept", "--dry-run", "--json", *scope, cwd=tmp_path, url=url))[kept]
    assert dry["size_bytes"] == listed["size_bytes"]
    assert dry["size_mb"] == listed["size_mb"]
    assert dry["dropped"] is False
    text = cli("gc", "--kept", "--dry-run", *scope, cwd=tmp_path, url=url).stdout
    mb = f"{listed['size_mb']:.1f}"
    assert f"would drop 1 database(s), {mb} MB (project {fakes.project!r})" in text
    assert f" {mb} " in next(line for line in text.splitlines() if line.startswith(kept))
    assert kept in fakes.existing()


def gc_with_a_dead_worker(fakes: Fakes, *args: str, cwd: Path) -> tuple[str, Rows]:
    """``gc`` while a dead worker database of ours is on the server.

    Dropping dead worker databases is every run's sweep's job on a shared server: when one
    dropped ours before our command saw it, or held its owner's lock while our command looked
    (gc then rightly leaves it to that sweep), try again with a new one.
    """
    for _ in range(3):
        dead = fakes.worker(run_id())
        fakes.kill(dead)
        rows = as_json(cli("gc", "--json", *args, cwd=cwd, url=fakes.url))
        if dead in rows:
            return dead, rows
        deadline = time.monotonic() + 10  # the sweep that holds it drops it: not left behind
        while dead in fakes.existing() and time.monotonic() < deadline:
            time.sleep(0.05)
    pytest.fail("another run's sweep dropped each dead worker database before gc saw it")


def test_gc_drops_exactly_what_it_should_in_scope_and_says_so(
    fakes: Fakes, url: str, tmp_path: Path
) -> None:
    other, other_run = f"{fakes.project}_other", run_id()
    live, kept = fakes.worker(run_id(), alive=True), fakes.kept(run_id())
    unused, cloned = fakes.template(), fakes.template(alive=True)
    kept_other, kept_other_run = fakes.kept(run_id(), other), fakes.kept(other_run, other)
    scope = ("--project", fakes.project)

    dead, rows = gc_with_a_dead_worker(fakes, *scope, cwd=tmp_path)
    assert set(rows) == {dead}
    assert rows[dead]["dropped"] is True
    assert fakes.existing() == {live, kept, unused, cloned, kept_other, kept_other_run}

    text = cli("gc", "--templates", "--kept", *scope, cwd=tmp_path, url=url).stdout
    assert fakes.existing() == {live, cloned, kept_other, kept_other_run}
    lines = text.splitlines()
    assert re.fullmatch(
        rf"dropped 2 database\(s\), \d+\.\d MB \(project '{fakes.project}'\):", lines[0]
    )
    sizes = {line.split()[0]: float(line.split()[-2]) for line in lines[2:4]}
    assert sizes.keys() == {unused, kept}
    assert all(size > 0 for size in sizes.values())

    by_run = as_json(cli("gc", "--kept", "--json", "--run", other_run, cwd=tmp_path, url=url))
    assert set(by_run) == {kept_other_run}
    assert fakes.existing() == {live, cloned, kept_other}


def test_gc_scopes_to_the_current_directorys_project_by_default(
    fakes: Fakes, url: str, tmp_path: Path
) -> None:
    other = f"{fakes.project}_other"
    mine, theirs = fakes.kept(run_id()), fakes.kept(run_id(), other)
    named = tmp_path / "named"
    (named / "tests").mkdir(parents=True)
    (named / "pyproject.toml").write_text(
        f'[project]\nname = "{fakes.project}"\n\n'
        f'[tool.pytest.ini_options]\npgtemplate_url = "{url}"\n'
    )
    # From a subdirectory, as pytest would: the rootdir is where pyproject.toml is.
    dry = cli("gc", "--kept", "--dry-run", "--json", cwd=named / "tests")
    assert set(as_json(dry)) == {mine}
    text = cli("gc", "--kept", "--dry-run", cwd=named).stdout
    assert f"(project {fakes.project!r}, this directory's)" in text
    configured = tmp_path / "configured"
    configured.mkdir()
    (configured / "pytest.ini").write_text(f"[pytest]\npgtemplate_project = {other}\n")
    dry = cli("gc", "--kept", "--dry-run", "--json", cwd=configured, url=url)
    assert set(as_json(dry)) == {theirs}
    assert fakes.existing() == {mine, theirs}


@pytest.mark.parametrize(
    ("args", "given_url", "says"),
    [
        (("list",), "mysql://root@127.0.0.1/x", "PGTEMPLATE_URL must point at PostgreSQL"),
        (("list",), "postgresql://postgres@127.0.0.1:1/postgres", "cannot connect to PostgreSQL"),
        (("gc", "--dry-run"), None, "no server: pass --url"),
        (("list", "--json", "--bogus"), None, "unrecognized arguments: --bogus"),
        (("gc", "--project", "x", "--all-projects"), None, "not both"),
    ],
)
def test_errors_are_one_line_with_status_2(
    args: tuple[str, ...], given_url: str | None, says: str, tmp_path: Path
) -> None:
    done = cli(*args, cwd=tmp_path, url=given_url, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr.removeprefix("pgtemplate: ").rstrip("\n")


def test_version(tmp_path: Path) -> None:
    assert cli("--version", cwd=tmp_path).stdout == f"pgtemplate {__version__}\n"


def test_a_bad_port_is_named_with_where_it_came_from(tmp_path: Path) -> None:
    bad = "has a bad port: expected a number from 1 to 65535, e.g. 5432"
    given = "postgresql://postgres@127.0.0.1:99999/postgres"
    assert one_line_error(cli("list", "--url", given, cwd=tmp_path, check=False)) == (
        f"--url '{given}' {bad} (got '99999')"
    )
    env = "postgresql://postgres:secret@127.0.0.1:0/postgres"
    assert one_line_error(cli("gc", "--dry-run", cwd=tmp_path, url=env, check=False)) == (
        f"PGTEMPLATE_URL 'postgresql://postgres:***@127.0.0.1:0/postgres' {bad} (got '0')"
    )
    ini = "postgresql://postgres@127.0.0.1:abc/postgres"
    (tmp_path / "pytest.ini").write_text(f"[pytest]\npgtemplate_url = {ini}\n")
    assert one_line_error(cli("list", cwd=tmp_path, check=False)) == (
        f"pgtemplate_url in {tmp_path / 'pytest.ini'} '{ini}' {bad} (got 'abc')"
    )


def test_a_connection_error_names_the_commands_own_flag(tmp_path: Path) -> None:
    down = "postgresql://postgres@127.0.0.1:1/postgres"
    said = one_line_error(cli("list", "--url", down, cwd=tmp_path, check=False))
    assert said.startswith(f"cannot connect to PostgreSQL at {down}: ")
    assert "Is the server running? Pass --url (or set PGTEMPLATE_URL, or pgtemplate_url" in said
    assert "--pgtemplate-url" not in said


@dataclass
class Filled:
    """Every connection slot of the server taken, by sessions of this test."""

    url: str
    sessions: list[psycopg.Connection] = field(default_factory=list)

    def fill(self) -> None:
        while True:
            try:
                self.sessions.append(psycopg.connect(self.url, autocommit=True))
            except psycopg.OperationalError:  # "sorry, too many clients already"
                return

    def close(self) -> None:
        for session in self.sessions:
            session.close()


def test_a_full_server_names_max_connections(
    admin: psycopg.Connection, url: str, tmp_path: Path
) -> None:
    row = admin.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'").fetchone()
    if row is None or not Path(row[0]).is_relative_to(suite_cache().resolve()):
        pytest.skip("fills every connection slot: only on the server this process started")
    filled = Filled(url)
    try:
        filled.fill()
        filled.fill()  # a session that was ending may have freed a slot meanwhile
        said = one_line_error(cli("list", "--url", url, cwd=tmp_path, check=False))
    finally:
        filled.close()
    assert said.endswith(
        "refused the connection: all the connections its max_connections allows are in use "
        "(sorry, too many clients already). Fix: wait for other clients to finish, or raise "
        "max_connections on the server (and restart it)"
    )


@pytest.fixture
def own_cache() -> Iterator[Path]:
    """A cache of the plugin's own servers used by this test alone; nothing is left of it."""
    path = Path(f"{cache_root()}-clitest-{uuid.uuid4().hex[:8]}")
    try:
        yield path
    finally:
        for data in path.glob("*/slot*/data"):
            reaper.halt(data, immediate=True)
        shutil.rmtree(path, ignore_errors=True)


def start_own(cache: Path, owner_pid: int) -> OwnServer:
    return start_now(LocalServerRequest(owner_pid, None, cache, fresh=False))


def slot_name(server: OwnServer) -> str:
    slot = server.data_dir.parent
    return f"{slot.parent.name}/{slot.name}"


def slot_rows(cache: Path, *args: str, cwd: Path) -> Rows:
    done = cli("cache", *args, "--json", "--cache-dir", str(cache), cwd=cwd)
    return {row["slot"]: row for row in json.loads(done.stdout)}


def test_cache_list_and_clean_never_touch_a_live_runs_slot(own_cache: Path, tmp_path: Path) -> None:
    mine = start_own(own_cache, os.getpid())
    other_run = subprocess.Popen(["sleep", "300"])
    try:
        theirs = start_own(own_cache, other_run.pid)
        rows = slot_rows(own_cache, "list", cwd=tmp_path)
        assert rows[slot_name(mine)]["owner_pid"] == os.getpid()
        assert rows[slot_name(theirs)]["owner_pid"] == other_run.pid
        for server in (mine, theirs):
            listed = rows[slot_name(server)]
            assert (listed["alive"], listed["running"], listed["port"]) == (True, True, server.port)
            assert isinstance(listed["size_bytes"], int)
            assert listed["size_bytes"] > 1 << 20
        assert slot_rows(own_cache, "clean", cwd=tmp_path)[slot_name(theirs)]["removed"] is False

        other_run.kill()  # that run is gone: its reaper stops its server
        other_run.wait()
        deadline = time.monotonic() + 30
        while reaper.postmaster_pid(theirs.data_dir) is not None:
            assert time.monotonic() < deadline, "the reaper did not stop the dead run's server"
            time.sleep(0.05)
        dry = cli("cache", "clean", "--dry-run", "--cache-dir", str(own_cache), cwd=tmp_path)
        assert re.match(r"would remove 1 slot\(s\), \d+\.\d MB \(", dry.stdout)
        assert f"kept {slot_name(mine)}: a live run (pid {os.getpid()}) owns it" in dry.stdout
        assert theirs.data_dir.is_dir()
        cleaned = slot_rows(own_cache, "clean", cwd=tmp_path)
        assert cleaned[slot_name(theirs)]["removed"] is True
        assert cleaned[slot_name(mine)]["removed"] is False
        assert cleaned[slot_name(mine)]["kept_because"] == f"a live run (pid {os.getpid()}) owns it"
        assert not theirs.data_dir.parent.exists()
        assert not auth.password_file(theirs.data_dir.parent).exists()
        with psycopg.connect(mine.url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,), "the live run's server is intact"
    finally:
        other_run.kill()
        other_run.wait()
        stop(mine)
    done = cli("cache", "clean", "--cache-dir", str(own_cache), cwd=tmp_path)
    assert done.stdout.startswith("removed 1 slot(s)")
    listing = cli("cache", "list", "--cache-dir", str(own_cache), cwd=tmp_path).stdout
    assert listing == f"no data directories in {own_cache}\n"


def test_list_own_reaches_a_live_runs_own_server(own_cache: Path, tmp_path: Path) -> None:
    cache = ("--cache-dir", str(own_cache))
    said = one_line_error(cli("list", "--own", *cache, cwd=tmp_path, check=False))
    assert said.startswith(f"no live run has an own server in {own_cache}: ")
    mine = start_own(own_cache, os.getpid())
    other_run = subprocess.Popen(["sleep", "300"])
    try:
        theirs = start_own(own_cache, other_run.pid)
        name = f"pgtemplate_{run_id()}_gw0_failed1"
        with psycopg.connect(theirs.url, autocommit=True) as conn:
            marker = DatabaseTag("kept", run_id=name.split("_")[1], project="clitest_own")
            conn.execute(f'CREATE DATABASE "{name}"')
            conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{marker.to_comment()}'")
        said = one_line_error(cli("list", "--own", *cache, cwd=tmp_path, check=False))
        assert f"2 live runs have an own server in {own_cache}" in said
        assert said.endswith("pass --owner PID to pick one")
        theirs_listed = cli("list", "--owner", str(other_run.pid), "--json", *cache, cwd=tmp_path)
        assert set(as_json(theirs_listed)) == {name}
        mine_listed = cli(
            "--own", "--owner", str(os.getpid()), "list", "--json", *cache, cwd=tmp_path
        )
        assert as_json(mine_listed) == {}
        dropped = cli(
            "gc",
            "--own",
            "--owner",
            str(other_run.pid),
            "--kept",
            "--json",
            "--all-projects",
            *cache,
            cwd=tmp_path,
        )
        assert as_json(dropped)[name]["dropped"] is True
    finally:
        other_run.kill()
        other_run.wait()
        stop(mine)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--url", "x", "cache", "list"), "--url applies to list and gc, not to cache"),
        (("--own", "--kept", "cache", "clean"), "--own, --kept apply to list and gc, not to cache"),
        (("cache", "list", "--url", "x"), "unrecognized arguments: --url x"),
        (("cache", "--dry-run", "list"), "--dry-run applies to gc and cache clean only"),
        (("list", "--own", "--url", "x"), "give --url or --own, not both"),
        (("cache",), "the following arguments are required: {list,clean}"),
    ],
)
def test_cache_and_own_usage_errors_are_one_line(
    args: tuple[str, ...], says: str, tmp_path: Path
) -> None:
    assert says in one_line_error(cli(*args, cwd=tmp_path, check=False))


def test_fingerprint_is_the_cache_key_and_follows_the_migrations(project: InnerProject) -> None:
    """`pgtemplate fingerprint`: the same for the same migrations, whatever the server; a new
    migration changes it (a CI cache keyed on it is never stale)."""
    command = [sys.executable, "-m", "pytest_pgtemplate", "fingerprint"]
    first = subprocess.run(command, cwd=project.path, capture_output=True, text=True, check=True)
    again = subprocess.run(command, cwd=project.path, capture_output=True, text=True, check=True)
    assert re.fullmatch(r"[0-9a-f]{64}\n", first.stdout)
    assert again.stdout == first.stdout
    (project.path / "migrations/versions/0005_more.py").write_text(
        'revision = "0005"\ndown_revision = "0004"\n\n\ndef upgrade():\n    pass\n'
    )
    changed = subprocess.run(command, cwd=project.path, capture_output=True, text=True, check=True)
    assert changed.stdout != first.stdout
