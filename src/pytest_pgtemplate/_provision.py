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

from . import _databases
from ._aio import BackgroundLoop
from ._errors import ConfigurationError, ResetError
from ._migrate import AlembicMigrator, CallableMigrator, Migrator
from ._naming import Marker, template_name, worker_database_name
from ._reset import LeakedBackend, Resetter, open_resetter
from ._server import ServerInfo, connect, describe
from ._settings import Settings
from ._template import BuildRequest, TemplateInfo, ensure_template, template_fingerprint
from ._urls import for_database, libpq, parse_server_url, with_driver

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


@dataclass
class Report:
    """What this process did, for the terminal summary (sent to the xdist controller)."""

    server: str = ""
    template: str = ""
    built: bool = False
    build_seconds: float = 0.0
    clone_seconds: float = 0.0
    clones: int = 0
    resets: int = 0

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
    _resetters: dict[str, Resetter] = field(default_factory=dict)
    _origins: dict[str, tuple[ServerInfo, TemplateInfo]] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)
    generation: int = 0
    """Bumped whenever a worker database is re-created: cached engines must drop their pools."""

    def server_url(self) -> URL:
        if not self.settings.url.value:
            raise ConfigurationError(NO_URL_MESSAGE)
        return parse_server_url(self.settings.url.value)

    def worker_database_name(self) -> str:
        return worker_database_name(self.identity.run_id, self.identity.worker_id)

    def worker_urls(self, server_url: URL) -> WorkerDatabase:
        """Deterministic, so they can be exported before the database exists (no connection)."""
        name = self.worker_database_name()
        url = for_database(server_url, name)
        return WorkerDatabase(name, with_driver(url, "asyncpg"), with_driver(url, "psycopg"))

    def connect_server(self) -> ServerInfo:
        url = self.server_url()
        admin = self._admin(url)
        info = self.loop.run(describe(admin, url, started=False))
        self.report.server = f"PostgreSQL {info.major} at {url.render_as_string()}"
        return info

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
        )
        info = ensure_template(self.loop, self._admin(url), request)
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
        marker = Marker("worker", run_id=self.identity.run_id, template=template.name)
        started = time.perf_counter()
        admin = self._admin(url)
        self.loop.run(_databases.drop(admin, database.name))
        self.loop.run(
            _databases.clone(
                admin, template.name, database.name, marker, file_copy=not server.fsync
            )
        )
        self.report.clone_seconds += time.perf_counter() - started
        self.report.clones += 1
        self._origins[database.name] = (server, template)
        self._dirty.discard(database.name)
        return database

    def ensure_clean(self, database: WorkerDatabase) -> None:
        """A database whose reset failed is re-cloned before the next test may use it."""
        if database.name in self._dirty:
            server, template = self._origins[database.name]
            self._close_resetter(database.name)
            self.create_worker_database(server, template)
            self.generation += 1

    def drop_worker_database(self, server: ServerInfo, database: WorkerDatabase) -> None:
        self._close_resetter(database.name)
        self._origins.pop(database.name, None)
        self.loop.run(_databases.drop(self._admin(make_url(server.url)), database.name))

    def reset(self, database: WorkerDatabase, strategy: str) -> list[LeakedBackend]:
        resetter = self._resetters.get(database.name)
        if resetter is None:
            resetter = self.loop.run(
                open_resetter(database.libpq_url, database.name, self.settings.connect_timeout)
            )
            self._resetters[database.name] = resetter
        try:
            leaked = self.loop.run(resetter.reset(strategy))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            self._close_resetter(database.name)
            self._dirty.add(database.name)
            raise ResetError(
                f"resetting {database.name} failed ({type(exc).__name__}: {exc}); it will be "
                "re-cloned from the template before the next test"
            ) from exc
        self.report.resets += 1
        return leaked

    def _close_resetter(self, name: str) -> None:
        resetter = self._resetters.pop(name, None)
        if resetter is not None:
            try:
                self.loop.run(resetter.close())
            except (asyncpg.InterfaceError, OSError, TimeoutError):
                resetter.conn.terminate()

    def close(self) -> None:
        for conn in [*self._resetters.values(), *self._admins.values()]:
            self.loop.run(conn.close())
        self._resetters.clear()
        self._admins.clear()
        self.loop.close()

    def _admin(self, url: URL) -> asyncpg.Connection:
        key = libpq(url)
        conn = self._admins.get(key)
        if conn is None or conn.is_closed():
            conn = self.loop.run(connect(url, self.settings.connect_timeout))
            self._admins[key] = conn
        return conn
