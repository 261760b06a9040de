"""The engine room of one pytest process: server, template, worker database, resets.

Each step takes the previous step's result explicitly, so that the fixtures that wrap them can
each be overridden in a user's conftest (pytest-django style) without the rest noticing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL, make_url

from . import databases
from .aio import BackgroundLoop
from .databases import clone_options
from .errors import ConfigurationError
from .lease import Lease
from .migrators import Migrator, build_migrator
from .naming import Marker, empty_name, now_iso, template_name, worker_database_name
from .report import Report
from .server.admin import DRIVER_ERRORS, ServerInfo, connect, describe, driver_errors
from .server.embedded import read_running
from .server.local import LocalServerRequest, ensure_started
from .server.local import describe as describe_local
from .settings import Settings
from .sweep import DropResult, Entry, drop_entries, inventory, surplus_templates, sweepable
from .template import BuildRequest, TemplateInfo, ensure_template, template_fingerprint
from .urls import libpq, parse_server_url
from .worker import Origin, WorkerDatabase, create_worker_database, worker_database

_SEE_LOG = "See the server's log; the run drops what it created."
NO_URL_MESSAGE = (
    "pytest-pgtemplate needs a PostgreSQL server: set pgtemplate_url in your pytest config, "
    "PGTEMPLATE_URL in the environment, or pass --pgtemplate-url, e.g. "
    "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class RunIdentity:
    run_id: str
    """Shared by all workers of one run (unique across runs, machines and CI shards)."""
    worker_id: str
    """``gw0``, ``gw1``... under xdist, ``main`` without it."""
    owner_pid: int
    """The process that lives for the whole run: owns the plugin's own server, if any."""
    server_url: str | None = None
    """The plugin's own server, when the owner started it before the workers."""


@dataclass
class Provisioner:
    """Settings, identity and the run report; the steps a fixture chain calls, one per link."""

    settings: Settings
    identity: RunIdentity
    rootdir: Path
    loop: BackgroundLoop = field(default_factory=BackgroundLoop)
    report: Report = field(default_factory=Report)
    _admins: dict[str, asyncpg.Connection] = field(default_factory=dict)
    _leases: dict[str, Lease] = field(default_factory=dict)
    _created: list[WorkerDatabase] = field(default_factory=list)
    """Every database this process made or is making, registered before its CREATE."""
    _servers: dict[str, URL] = field(default_factory=dict)
    """The admin URL each database without state of its own (empty databases) lives on."""
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

    def connect_server(self, lock_dir: Path) -> ServerInfo:
        """``lock_dir`` is shared by the run's workers: the plugin's own server starts once."""
        if self.has_server_url():
            url, started = self.server_url(), bool(self.identity.server_url)
            note = f"{'embedded ' if started else ''}PostgreSQL at {url.render_as_string()}"
        else:
            local = self.local_server()
            server, here = ensure_started(local, lock_dir, self.settings.lock_timeout)
            url, started, note = (
                make_url(server.url),
                True,
                describe_local(server, started_here=here),
            )
            self.report.server_started = here
        admin = self._admin(url)
        info = self.loop.run(describe(admin, url, started=started))
        self.loop.run(self.lease(url).ensure())
        self.report.server = note
        self._sweep(admin)
        return info

    def sweep_after_crash(self) -> None:
        """The controller outlives a crashed worker: it drops what the worker could not."""
        url = self.settings.url.value or self.identity.server_url
        if not url:
            running = read_running(self.local_server().cache, self.identity.owner_pid)
            url = running.url if running is not None else None
        if url:
            self._sweep(self._admin(parse_server_url(url)))

    def _sweep(self, admin: asyncpg.Connection) -> None:
        """Drop the databases of runs that died without cleaning up; never fails a test."""
        result = self._drop_safely(admin, sweepable, "sweeping dead runs' databases")
        self.report.swept += len(result.dropped)

    def _prune_templates(self, admin: asyncpg.Connection) -> None:
        def surplus(entries: list[Entry]) -> list[Entry]:
            return surplus_templates(entries, self.settings.project, self.settings.keep_templates)

        self._drop_safely(admin, surplus, "dropping old templates")

    def _drop_safely(
        self, admin: asyncpg.Connection, choose: Callable[[list[Entry]], list[Entry]], what: str
    ) -> DropResult:
        try:
            result = self.loop.run(drop_entries(admin, choose(self.loop.run(inventory(admin)))))
        except DRIVER_ERRORS as exc:
            self.report.problems.append(f"{what} failed: {type(exc).__name__}: {exc}")
            return DropResult()
        self.report.problems += [f"{what}: left {line}" for line in result.refused]
        return result

    def template(self, server: ServerInfo, lock_dir: Path) -> TemplateInfo:
        """``lock_dir`` must be shared by every worker of the run (it holds the file lock)."""
        migrator = self.migrator()
        fingerprint = template_fingerprint(migrator, server.major, server.role)
        url = make_url(server.url)
        request = BuildRequest(
            name=template_name(fingerprint),
            fingerprint=fingerprint,
            server_url=url,
            migrator=migrator,
            lock_dir=lock_dir,
            lock_timeout=self.settings.lock_timeout,
            run_id=self.identity.run_id,
            project=self.settings.project,
        )
        admin = self._admin(url)
        with driver_errors(
            f"looking up or building template {request.name}",
            "The half-built template, if any, was dropped; see the server's log.",
        ):
            info = ensure_template(self.loop, admin, self.lease(url), request)
        if not info.reused:
            self._prune_templates(admin)
        self.report.template, self.report.built = info.name, not info.reused
        self.report.build_seconds = info.build_seconds
        return info

    def migrator(self) -> Migrator:
        if self._migrator is None:
            self._migrator = build_migrator(self.settings, self.rootdir)
        return self._migrator

    def create_worker_database(self, server: ServerInfo, template: TemplateInfo) -> WorkerDatabase:
        url = make_url(server.url)
        database = self.worker_urls(url)
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
            clone=clone_options(server, durable=self.settings.durable),
            connect_timeout=self.settings.connect_timeout,
            leak_grace=self.settings.leak_grace,
        )
        started = time.perf_counter()
        self._created.append(database)  # registered for dropping before anything is created
        create_worker_database(
            database,
            origin,
            loop=self.loop,
            lease=self.lease(url),
            admin=lambda: self._admin(url),
            on_reset=self._count,
        )
        self.report.clone_seconds += time.perf_counter() - started
        self.report.clones += 1
        self.report.clone_method = origin.clone.describe()
        return database

    def create_empty_database(self, server: ServerInfo) -> WorkerDatabase:
        """From template0, owned by the role in use; claimed like the worker's, so swept alike."""
        url = make_url(server.url)
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
        options = clone_options(server, durable=self.settings.durable)
        self._created.append(database)
        self._servers[database.name] = url
        with driver_errors(f"creating the empty database {database.name}", _SEE_LOG):
            self.loop.run(self.lease(url).claim(owner))
            self.loop.run(
                databases.clone(self._admin(url), "template0", database.name, marker, options)
            )
        return database

    def drop_database(self, database: WorkerDatabase) -> None:
        """Drop a database this process created (after proving it is this run's, right then)."""
        if database in self._created:
            self._created.remove(database)
        if database.has_state:
            database.drop()
            return
        url = self._servers.pop(database.name, None)
        if url is None:
            return
        with driver_errors(f"dropping {database.name}", _SEE_LOG):
            self.loop.run(self.lease(url).ensure())
            run_id = self.identity.run_id
            self.loop.run(databases.drop_own(self._admin(url), database.name, run_id))

    def _count(self) -> None:
        self.report.resets += 1

    def drop_worker_databases(self) -> None:
        """At the end of the run: every database this process registered, created or not."""
        for database in list(self._created):
            self.drop_database(database)

    def lease(self, url: URL) -> Lease:
        key = libpq(url)
        if key not in self._leases:
            self._leases[key] = Lease(url, self.settings.connect_timeout)
        return self._leases[key]

    def lease_renewals(self) -> int:
        return sum(lease.renewals for lease in self._leases.values())

    def close(self) -> None:
        try:
            self.drop_worker_databases()
        finally:
            for lease in self._leases.values():
                self.loop.run(lease.close())
            for conn in self._admins.values():
                self.loop.run(conn.close())
            self._leases.clear()
            self._admins.clear()
            self.loop.close()

    def _admin(self, url: URL) -> asyncpg.Connection:
        key = libpq(url)
        conn = self._admins.get(key)
        if conn is None or conn.is_closed():
            conn = self.loop.run(connect(url, self.settings.connect_timeout))
            self._admins[key] = conn
        return conn
