"""One pytest process's part in a run: its settings, identity and report, and the servers it met.

What the fixture chain builds (server, template, worker database) is owned by the chain's own
objects; this keeps only what is the process's: which server the settings name (or the plugin's
own), the names its databases get, and every server it worked on, to sweep once when first
seen, to close at the end, and, for a server a conftest made, to write down where the run's
controller finds it after a worker crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigurationError, PgTemplateError
from .identity import RunIdentity
from .naming import worker_database_name
from .report import Report, ServerUsed
from .settings import Settings
from .urls import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from .migrators import Migrator
    from .server.connection import Server
    from .server.per_run import LocalServerRequest
    from .template import BuildOptions
    from .worker import WorkerDatabase

# The engine room (SQLAlchemy, asyncpg, alembic) is imported by the methods that need it: a run
# whose tests never ask for a database never loads it.

NO_URL_MESSAGE = (
    "pytest-pgtemplate needs a PostgreSQL server: set pgtemplate_url in your pytest config, "
    "PGTEMPLATE_URL in the environment, or pass --pgtemplate-url, e.g. "
    "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Run:
    settings: Settings
    identity: RunIdentity
    rootdir: Path
    report: Report = field(default_factory=Report)
    _servers: dict[str, Server] = field(default_factory=dict)
    _migrator: Migrator | None = None
    _empties: int = 0

    def __post_init__(self) -> None:
        self.report.worker = self.identity.worker_id

    def server_url(self) -> URL:
        """The server the settings name, or the own one its owner started before the workers."""
        from .urls import parse_server_url

        given = self.settings.url.value or self.identity.server_url
        if not given:
            raise ConfigurationError(NO_URL_MESSAGE)
        return parse_server_url(given)

    def has_server_url(self) -> bool:
        return bool(self.settings.url.value or self.identity.server_url)

    def own_server(self) -> LocalServerRequest:
        from .server.per_run import LocalServerRequest

        settings = self.settings
        return LocalServerRequest(
            self.identity.owner_pid, settings.bin_dir, settings.cache_dir, False
        )

    def own_password_file(self) -> Path | None:
        """Where the own server's password is, when the run is on the plugin's own server."""
        if self.settings.url.value:
            return None
        from .server.own import read_running

        running = read_running(self.own_server().cache, self.identity.owner_pid)
        return running.password_file if running is not None else None

    def worker_name(self) -> str:
        return worker_database_name(self.identity.run_id, self.identity.worker_id)

    def worker_urls(self, server_url: URL) -> WorkerDatabase:
        """Deterministic, so they can be exported before the database exists (no connection)."""
        from .urls import libpq
        from .worker import worker_database

        return worker_database(libpq(server_url), self.worker_name())

    def migrator(self) -> Migrator:
        from .migrators import build_migrator

        if self._migrator is None:
            self._migrator = build_migrator(self.settings, self.rootdir)
        return self._migrator

    def build_options(self, lock_dir: Path) -> BuildOptions:
        from .archive import Archive
        from .template import BuildOptions

        settings = self.settings
        archive = Archive(settings.archive_dir, settings.bin_dir) if settings.archive_dir else None
        return BuildOptions(
            lock_dir, settings.lock_timeout, settings.project, settings.keep_templates, archive
        )

    def next_empty(self) -> int:
        self._empties += 1
        return self._empties

    def open_server(self, lock_dir: Path) -> Server:
        """``lock_dir`` is shared by the run's workers: the plugin's own server starts once."""
        from sqlalchemy.engine import make_url

        from .server.connection import Server
        from .server.per_run import describe, ensure_started
        from .urls import libpq, redacted

        if self.has_server_url():
            url, started = self.server_url(), bool(self.identity.server_url)
            note = f"{'own ' if started else ''}PostgreSQL at {redacted(url)}"
            used = ServerUsed(note)
        else:
            own, here = ensure_started(self.own_server(), lock_dir, self.settings.lock_timeout)
            url, started = make_url(own.url), True
            used = ServerUsed(describe(own, started_here=here), started_here=here)
        server = Server.connect(libpq(url), started_by_plugin=started)
        server.report = self.report
        self.report.record(used)
        if self.identity.worker_id in ("gw0", "main"):  # once per run
            warn_if_short_of_connections(server, int(os.environ.get(_WORKERS, "1")))
        return self.adopt(server, configured=True)

    def adopt(self, server: Server, *, configured: bool = False) -> Server:
        """First sight of a server: sweep dead runs' databases there, and remember it.

        A server the configuration does not name (a conftest's own ``pg_server``) is written
        where the run's controller finds it, so it can sweep there after a worker crash.
        """
        from .sweep import drop_quietly, sweepable

        if server.key in self._servers:
            return self._servers[server.key]
        self._servers[server.key] = server
        if server.report is not self.report:
            server.report = self.report
            self.report.record(ServerUsed(f"PostgreSQL at {redact(server.url)} (pg_server)"))
        server.run_id = self.identity.run_id
        if not configured:
            record_server(self._servers_file(), server.url)
        server.run(server.claim.ensure())
        drop_quietly(server, sweepable, "sweeping dead runs' databases")
        return server

    def sweep_after_crash(self) -> None:
        """The controller outlives a crashed worker: it drops what the worker could not."""
        from .server.connection import Server
        from .server.own import read_running

        urls = recorded_servers(self._servers_file())
        configured = self.settings.url.value or self.identity.server_url
        if not configured:
            running = read_running(self.own_server().cache, self.identity.owner_pid)
            configured = running.url if running is not None else None
        if configured:
            urls.insert(0, configured)
        problems = []
        for url in dict.fromkeys(urls):
            try:
                self.adopt(Server.connect(url), configured=True)
            except PgTemplateError as exc:  # one unreachable server must not spare the others
                problems.append(str(exc))
        if problems:
            raise PgTemplateError("; ".join(problems))

    def close(self) -> None:
        """Every server this process worked on drops what it registered, then lets go."""
        try:
            for server in self._servers.values():
                server.close()
        finally:
            self._servers.clear()
            if self.identity.owner_pid == os.getpid():
                self._servers_file().unlink(missing_ok=True)
                prune_recorded(self._servers_file().parent)

    def _servers_file(self) -> Path:
        from .server.cache import cache_root

        name = f"{self.identity.run_id}-{self.identity.owner_pid}.servers"
        return (self.settings.cache_dir or cache_root()) / "runs" / name


_WORKERS = "PYTEST_XDIST_WORKER_COUNT"
CONNECTIONS_PER_WORKER = 3
"""The plugin's own two (its claim, which also does the admin work, and the resetter's on the
worker database) and the test's engine's first."""
_CONNECTIONS = """
SELECT current_setting('max_connections')::int AS most,
       CASE WHEN current_setting('is_superuser') = 'on' THEN 0
            ELSE current_setting('superuser_reserved_connections')::int END AS reserved,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
          AND application_name <> 'pytest-pgtemplate lease') AS others
"""


def warn_if_short_of_connections(server: Server, workers: int) -> None:
    """At the start: ``-n 25`` on a server of 100 connections fails every test with a driver's
    'too many clients'; say so once, with the numbers and the fixes."""
    import warnings

    from .errors import PgTemplateWarning

    row = server.run(server.admin().fetchrow(_CONNECTIONS))
    free = row["most"] - row["reserved"] - row["others"]
    needed = workers * CONNECTIONS_PER_WORKER
    if free >= needed:
        return
    fits = max(free // CONNECTIONS_PER_WORKER, 1)
    warnings.warn(
        PgTemplateWarning(
            f"pytest-pgtemplate: {workers} worker(s) need about {needed} connections "
            f"({CONNECTIONS_PER_WORKER} each: the plugin's 2 and a test's engine), but the server "
            f"allows {row['most']} ({row['reserved']} reserved for superusers) and {row['others']} "
            f"are in use by others: {free} left. Run fewer workers (-n {fits}), raise "
            "max_connections on the server, or use the plugin's own server (no pgtemplate_url)."
        ),
        stacklevel=2,
    )


def record_server(path: Path, url: str) -> None:
    """One line per server; owner-only, since a URL may carry a password."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{url}\n".encode())
    finally:
        os.close(fd)


def recorded_servers(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def prune_recorded(directory: Path) -> None:
    """Files of runs whose owner is gone (killed before its end could remove them)."""
    from .server import reaper

    for path in directory.glob("*-*.servers"):
        pid = path.stem.rpartition("-")[2]
        if pid.isdigit() and not reaper.alive(int(pid)):
            path.unlink(missing_ok=True)
