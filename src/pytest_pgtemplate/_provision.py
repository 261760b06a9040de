"""The engine room of one pytest process: server, template, worker database, resets.

Each step takes the previous step's result explicitly, so that the fixtures that wrap them can
each be overridden in a user's conftest (pytest-django style) without the rest noticing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL, make_url

from ._aio import BackgroundLoop
from ._embedded import read_running
from ._errors import ConfigurationError
from ._liveness import (
    dead_workers,
    drop_entries,
    hold_liveness,
    hold_template_use,
    inventory,
    surplus_templates,
)
from ._local_server import LocalServerRequest, ensure_started
from ._local_server import describe as describe_local
from ._migrate import AlembicMigrator, CallableMigrator, Migrator
from ._naming import Marker, now_iso, template_name, worker_database_name
from ._reset import LeakedBackend
from ._server import ServerInfo, connect, describe
from ._settings import Settings
from ._template import BuildRequest, TemplateInfo, ensure_template, template_fingerprint
from ._urls import for_database, libpq, parse_server_url, with_driver
from ._worker import Origin, WorkerSlot

NO_URL_MESSAGE = (
    "pytest-pgtemplate needs a PostgreSQL server: set pgtemplate_url in your pytest config, "
    "PGTEMPLATE_URL in the environment, or pass --pgtemplate-url, e.g. "
    "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class WorkerDatabase:
    """This worker's own database, cloned from the template (the ``pg_worker_database`` fixture)."""

    name: str
    url: str
    """``postgresql+asyncpg://`` URL for create_async_engine; drop ``+asyncpg`` for psql."""
    sync_url: str
    """``postgresql+psycopg://`` URL for a synchronous SQLAlchemy engine (needs psycopg)."""

    @property
    def libpq_url(self) -> str:
        """``postgresql://`` form, for psql, pg_dump and asyncpg.connect."""
        return libpq(make_url(self.url))


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
class Report:
    """What this process did, for the terminal summary (sent to the xdist controller)."""

    server: str = ""
    server_started: bool = False
    """This process started the plugin's own server: its note has the start-up figures."""
    template: str = ""
    built: bool = False
    build_seconds: float = 0.0
    clone_seconds: float = 0.0
    clones: int = 0
    resets: int = 0
    swept: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(vars(self))


@dataclass
class Provisioner:
    settings: Settings
    identity: RunIdentity
    rootdir: Path
    loop: BackgroundLoop = field(default_factory=BackgroundLoop)
    report: Report = field(default_factory=Report)
    _admins: dict[str, asyncpg.Connection] = field(default_factory=dict)
    _slots: dict[str, WorkerSlot] = field(default_factory=dict)
    generation: int = 0
    """Bumped whenever a worker database is re-created: cached engines must drop their pools."""

    def server_url(self) -> URL:
        """The server named by the settings, or started by the owner; None: start on first use."""
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
        name = self.worker_database_name()
        url = for_database(server_url, name)
        return WorkerDatabase(name, with_driver(url, "asyncpg"), with_driver(url, "psycopg"))

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
        self.report.server = note
        self.loop.run(self._sweep(admin))
        return info

    def sweep_after_crash(self) -> None:
        """The controller outlives a crashed worker: it drops what the worker could not."""
        url = self.settings.url.value or self.identity.server_url
        if not url:
            running = read_running(self.local_server().cache, self.identity.owner_pid)
            url = running.url if running is not None else None
        if url:
            self.loop.run(self._sweep(self._admin(parse_server_url(url))))

    async def _prune_templates(self, admin: asyncpg.Connection) -> None:
        surplus = surplus_templates(
            await inventory(admin), self.rootdir.name, self.settings.keep_templates
        )
        await drop_entries(admin, surplus)

    async def _sweep(self, admin: asyncpg.Connection) -> None:
        """Drop the databases of runs that died without cleaning up (never a live run's)."""
        dead = dead_workers(await inventory(admin))
        await drop_entries(admin, dead)
        self.report.swept += len(dead)

    def template(self, server: ServerInfo, lock_dir: Path) -> TemplateInfo:
        """``lock_dir`` must be shared by every worker of the run (it holds the file lock)."""
        migrator = self.migrator()
        fingerprint = template_fingerprint(migrator, server.major)
        url = make_url(server.url)
        request = BuildRequest(
            name=template_name(fingerprint),
            fingerprint=fingerprint,
            server_url=url,
            migrator=migrator,
            lock_dir=lock_dir,
            lock_timeout=self.settings.lock_timeout,
            run_id=self.identity.run_id,
            project=self.rootdir.name,
        )
        admin = self._admin(url)
        info = ensure_template(self.loop, admin, request)
        if not info.reused:
            self.loop.run(self._prune_templates(admin))
        self.report.template, self.report.built = info.name, not info.reused
        self.report.build_seconds = info.build_seconds
        return info

    def migrator(self) -> Migrator:
        if self.settings.migrate:
            return CallableMigrator(self.settings.migrate, self.settings.export_env)
        assert self.settings.alembic_ini is not None
        return AlembicMigrator(self.settings.alembic_ini, self.settings.export_env)

    def create_worker_database(self, server: ServerInfo, template: TemplateInfo) -> WorkerDatabase:
        url = make_url(server.url)
        database = self.worker_urls(url)
        marker = Marker(
            "worker",
            run_id=self.identity.run_id,
            template=template.name,
            owner=database.name,
            created=now_iso(),
        )
        origin = Origin(
            server_url=url,
            template=template.name,
            marker=marker,
            file_copy=not server.fsync,
            connect_timeout=self.settings.connect_timeout,
        )
        started = time.perf_counter()
        admin = self._admin(url)
        self.loop.run(hold_liveness(admin, database.name))  # before the database exists
        self.loop.run(hold_template_use(admin, template.name))
        slot = WorkerSlot(database.name, origin, self.loop, admin)
        slot.create()
        self.report.clone_seconds += time.perf_counter() - started
        self.report.clones += 1
        self._slots[database.name] = slot
        if self.settings.reset == "recreate":
            slot.prepare_spare()
        return database

    def ensure_clean(self, database: WorkerDatabase) -> None:
        """A database whose reset failed is re-cloned before the next test may use it."""
        slot = self._slots[database.name]
        if slot.dirty:
            slot.recreate()
            self.generation += 1

    def reset(self, database: WorkerDatabase, strategy: str) -> list[LeakedBackend]:
        slot = self._slots[database.name]
        if strategy == "recreate":
            leaked = slot.recreate()
            self.generation += 1
        else:
            leaked = slot.reset(strategy)
        self.report.resets += 1
        return leaked

    def keep_copy(self, database: WorkerDatabase) -> str:
        """Copy a failed test's database for inspection; returns the copy's URL."""
        url = self._slots[database.name].keep_copy()
        self.generation += 1  # the copy ended every connection, pooled ones too
        return url

    def drop_worker_database(self, server: ServerInfo, database: WorkerDatabase) -> None:
        slot = self._slots.pop(database.name, None)
        if slot is not None:
            slot.drop()

    def close(self) -> None:
        for slot in self._slots.values():
            slot.close_connection()
        for conn in self._admins.values():
            self.loop.run(conn.close())
        self._slots.clear()
        self._admins.clear()
        self.loop.close()

    def _admin(self, url: URL) -> asyncpg.Connection:
        key = libpq(url)
        conn = self._admins.get(key)
        if conn is None or conn.is_closed():
            conn = self.loop.run(connect(url, self.settings.connect_timeout))
            self._admins[key] = conn
        return conn
