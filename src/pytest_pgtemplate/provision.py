"""The engine room of one pytest process: server, template, worker database, resets.

Each step takes the previous step's result explicitly, so that the fixtures that wrap them can
each be overridden in a user's conftest (pytest-django style) without the rest noticing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from . import databases
from .aio import BackgroundLoop, process_loop
from .databases import clone_options
from .errors import ConfigurationError, PgTemplateError
from .identity import RunIdentity
from .migrators import Migrator, build_migrator
from .naming import Marker, empty_name, now_iso, template_name, worker_database_name
from .report import Report
from .server.admin import DRIVER_ERRORS, driver_errors
from .server.connection import Server
from .server.embedded import read_running
from .server.local import LocalServerRequest, ensure_started
from .server.local import describe as describe_local
from .settings import Settings
from .sweep import DropResult, Entry, drop_entries, inventory, surplus_templates, sweepable
from .template import BuildRequest, TemplateInfo, ensure_template, template_fingerprint
from .urls import export_values, libpq, parse_server_url, redacted
from .worker import Origin, WorkerDatabase, create_worker_database, worker_database

_SEE_LOG = "See the server's log; the run drops what it created."
NO_URL_MESSAGE = (
    "pytest-pgtemplate needs a PostgreSQL server: set pgtemplate_url in your pytest config, "
    "PGTEMPLATE_URL in the environment, or pass --pgtemplate-url, e.g. "
    "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Provisioner:
    """Settings, identity and the run report, plus the steps a fixture chain calls, one per link.

    Each step takes the ``Server`` it works on from the fixture that called it, so an
    overriding ``pg_server`` redirects everything downstream. What the provisioner keeps is
    only the run's safety net: every database this process registered (to drop at the end even
    if a fixture failed half-way) and every server it worked on (to sweep and to close).
    """

    settings: Settings
    identity: RunIdentity
    rootdir: Path
    loop: BackgroundLoop = field(default_factory=process_loop)
    report: Report = field(default_factory=Report)
    _created: dict[str, tuple[WorkerDatabase, Server]] = field(default_factory=dict)
    """Every database this process made or is making, registered before its CREATE."""
    _servers: dict[str, Server] = field(default_factory=dict)
    """Every server this process worked on, by ``Server.key``: swept once, closed at the end."""
    _migrator: Migrator | None = None
    _empties: int = 0

    def __post_init__(self) -> None:
        self.report.worker = self.identity.worker_id

    def server_url(self) -> URL:
        """The server named by the settings, or started by the owner before the workers."""
        given = self.settings.url.value or self.identity.server_url
        if not given:
            raise ConfigurationError(NO_URL_MESSAGE)
        return parse_server_url(given)

    def has_server_url(self) -> bool:
        return bool(self.settings.url.value or self.identity.server_url)

    def local_server(self) -> LocalServerRequest:
        settings = self.settings
        return LocalServerRequest(
            self.identity.owner_pid, settings.bin_dir, settings.cache_dir, settings.fresh_server
        )

    def worker_database_name(self) -> str:
        return worker_database_name(self.identity.run_id, self.identity.worker_id)

    def worker_urls(self, server_url: URL) -> WorkerDatabase:
        """Deterministic, so they can be exported before the database exists (no connection)."""
        return worker_database(libpq(server_url), self.worker_database_name())

    def connect_server(self, lock_dir: Path) -> Server:
        """``lock_dir`` is shared by the run's workers: the plugin's own server starts once."""
        if self.has_server_url():
            url, started = self.server_url(), bool(self.identity.server_url)
            note = f"{'embedded ' if started else ''}PostgreSQL at {url.render_as_string()}"
        else:
            local = self.local_server()
            running, here = ensure_started(local, lock_dir, self.settings.lock_timeout)
            url, started = make_url(running.url), True
            note = describe_local(running, started_here=here)
            self.report.server_started = here
        server = Server.connect(
            libpq(url),
            connect_timeout=self.settings.connect_timeout,
            started_by_plugin=started,
            loop=self.loop,
        )
        self.report.server = note
        return self.adopt(server, configured=True)

    def adopt(self, server: Server, *, configured: bool = False) -> Server:
        """First sight of a server: sweep dead runs' databases there, and remember it.

        A server the configuration does not name (a conftest's own ``pg_server``) is written
        where the run's controller finds it, so it can sweep there after a worker crash.
        """
        if server.key in self._servers:
            return self._servers[server.key]
        self._servers[server.key] = server
        if not self.report.server:
            self.report.server = f"PostgreSQL at {redacted(make_url(server.url))} (pg_server)"
        if not configured:  # a conftest's own Server (a duplicate line costs one more sweep)
            record_server(self._servers_file(), server.url)
        server.run(server.lease.ensure())
        self._sweep(server)
        return server

    def _servers_file(self) -> Path:
        return self.local_server().cache / "runs" / f"{self.identity.run_id}.servers"

    def sweep_after_crash(self) -> None:
        """The controller outlives a crashed worker: it drops what the worker could not."""
        urls = recorded_servers(self._servers_file())
        configured = self.settings.url.value or self.identity.server_url
        if not configured:
            running = read_running(self.local_server().cache, self.identity.owner_pid)
            configured = running.url if running is not None else None
        if configured:
            urls.insert(0, configured)
        problems = []
        for url in dict.fromkeys(urls):
            try:
                server = Server.connect(
                    url, connect_timeout=self.settings.connect_timeout, loop=self.loop
                )
            except PgTemplateError as exc:  # one unreachable server must not spare the others
                problems.append(str(exc))
                continue
            self._servers.setdefault(server.key, server)
            self._sweep(server)
        if problems:
            raise PgTemplateError("; ".join(problems))

    def _sweep(self, server: Server) -> None:
        """Drop the databases of runs that died without cleaning up; never fails a test."""
        result = self._drop_safely(server, sweepable, "sweeping dead runs' databases")
        self.report.swept += len(result.dropped)

    def _prune_templates(self, server: Server) -> None:
        def surplus(entries: list[Entry]) -> list[Entry]:
            return surplus_templates(entries, self.settings.project, self.settings.keep_templates)

        self._drop_safely(server, surplus, "dropping old templates")

    def _drop_safely(
        self, server: Server, choose: Callable[[list[Entry]], list[Entry]], what: str
    ) -> DropResult:
        try:
            admin = server.admin()
            result = server.run(drop_entries(admin, choose(server.run(inventory(admin)))))
        except DRIVER_ERRORS as exc:
            self.report.problems.append(f"{what} failed: {type(exc).__name__}: {exc}")
            return DropResult()
        self.report.problems += [f"{what}: left {line}" for line in result.refused]
        return result

    def template(self, server: Server, lock_dir: Path) -> TemplateInfo:
        """``lock_dir`` must be shared by every worker of the run (it holds the file lock)."""
        server = self.adopt(server)
        migrator = self.migrator()
        fingerprint = template_fingerprint(migrator, server.major, server.role)
        request = BuildRequest(
            name=template_name(fingerprint),
            fingerprint=fingerprint,
            server_url=make_url(server.url),
            migrator=migrator,
            lock_dir=lock_dir,
            lock_timeout=self.settings.lock_timeout,
            run_id=self.identity.run_id,
            project=self.settings.project,
        )
        with driver_errors(
            f"looking up or building template {request.name}",
            "The half-built template, if any, was dropped; see the server's log.",
        ):
            info = ensure_template(server.loop, server.admin(), server.lease, request)
        if not info.reused:
            self._prune_templates(server)
        self.report.template, self.report.built = info.name, not info.reused
        self.report.build_seconds = info.build_seconds
        return info

    def migrator(self) -> Migrator:
        if self._migrator is None:
            self._migrator = build_migrator(self.settings, self.rootdir)
        return self._migrator

    def create_worker_database(self, server: Server, template: TemplateInfo) -> WorkerDatabase:
        server = self.adopt(server)
        database = self.worker_urls(make_url(server.url))
        marker = Marker(
            "worker",
            run_id=self.identity.run_id,
            template=template.name,
            owner=database.name,
            project=self.settings.project,
            created=now_iso(),
        )
        origin = Origin(
            server_url=server.url,
            template=template.name,
            marker=marker,
            clone=clone_options(
                server.info,
                durable=self.settings.durable,
                template_bytes=self._template_bytes(server, template),
            ),
            connect_timeout=self.settings.connect_timeout,
            leak_grace=self.settings.leak_grace,
        )
        started = time.perf_counter()
        self._created[database.name] = (database, server)  # registered before the CREATE
        create_worker_database(
            database,
            origin,
            loop=server.loop,
            lease=server.lease,
            admin=server.admin,
            on_reset=self._count,
        )
        self.report.clone_seconds += time.perf_counter() - started
        self.report.clones += 1
        self.report.clone_method = origin.clone.describe()
        self._export(database)
        return database

    def _template_bytes(self, server: Server, template: TemplateInfo) -> int | None:
        """Only where it decides the clone method: a reflinking data directory with fsync on."""
        if not (server.info.reflink and server.fsync):
            return None
        size = "SELECT pg_database_size(oid) FROM pg_database WHERE datname = $1"
        try:
            return int(server.run(server.admin().fetchval(size, template.name)))
        except (*DRIVER_ERRORS, TypeError):
            return None

    def _export(self, database: WorkerDatabase) -> None:
        """Exported at configure time for the configured server; a conftest's own server is
        known only now, so the variables follow it (code that read them at import saw the
        configured server's URL: read ``pg_worker_database.url`` instead)."""
        os.environ.update(export_values(self.settings.export_env, database.url))

    def create_empty_database(self, server: Server) -> WorkerDatabase:
        """From template0, owned by the role in use; claimed like the worker's, so swept alike."""
        server = self.adopt(server)
        owner = self.worker_database_name()
        self._empties += 1
        database = worker_database(server.url, empty_name(owner, self._empties))
        marker = Marker(
            "worker",
            run_id=self.identity.run_id,
            owner=owner,
            project=self.settings.project,
            created=now_iso(),
        )
        options = clone_options(server.info, durable=self.settings.durable)
        self._created[database.name] = (database, server)
        with driver_errors(f"creating the empty database {database.name}", _SEE_LOG):
            server.run(server.lease.claim(owner))
            server.run(databases.clone(server.admin(), "template0", database.name, marker, options))
        return database

    def drop_database(self, database: WorkerDatabase) -> None:
        """Drop a database this process created (after proving it is this run's, right then)."""
        entry = self._created.pop(database.name, None)
        if database.has_state:
            database.drop()
            return
        if entry is None:
            return
        server = entry[1]
        with driver_errors(f"dropping {database.name}", _SEE_LOG):
            server.run(server.lease.ensure())
            run_id = self.identity.run_id
            server.run(databases.drop_own(server.admin(), database.name, run_id))

    def _count(self) -> None:
        self.report.resets += 1

    def drop_worker_databases(self) -> None:
        """At the end of the run: every database this process registered, created or not."""
        for database, _ in list(self._created.values()):
            self.drop_database(database)

    def close(self) -> None:
        try:
            self.drop_worker_databases()
        finally:
            try:
                for server in self._servers.values():
                    server.close()
            finally:
                self._servers.clear()
                if self.identity.owner_pid == os.getpid():
                    self._servers_file().unlink(missing_ok=True)
                self.loop.close()


def record_server(path: Path, url: str) -> None:
    """One line per server; owner-only, since a URL may carry a password."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
