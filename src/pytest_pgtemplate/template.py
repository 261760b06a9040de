"""The template database: reused when finished, otherwise built exactly once.

Two locks make "exactly once" hold: a file lock for the xdist workers of one run (cheap, no
polling), and a PostgreSQL advisory lock for runs on other machines that share the server.
A template is trusted only once it is marked (``IS_TEMPLATE``, ``ALLOW_CONNECTIONS false``),
which is the build's last step; an unmarked one is a crash leftover and is rebuilt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
from filelock import FileLock, Timeout
from sqlalchemy.engine import URL, make_url

from . import archive, databases
from ._version import __version__
from .aio import BackgroundLoop
from .archive import Archive
from .claim import Claim, build_lock_key
from .errors import LockTimeoutError, MigrationError, PgTemplateError, PgTemplateWarning
from .fingerprint import hash_parts
from .migrators import Migrator, Verified
from .naming import DatabaseTag, now_iso, template_name
from .report import TemplateReady
from .reset.install import install
from .reset.sql import tracking_digest
from .server.admin import DRIVER_ERRORS, driver_errors
from .server.connection import Server
from .sweep import drop_quietly, surplus_templates
from .urls import for_database, libpq

TRACKING_VERSION = f"4:{tracking_digest()}"
"""Part of every fingerprint: a template built with other (or no) change tracking is not reused.
The number is for what the SQL does not show (what install() records); the digest covers the SQL."""


@dataclass(frozen=True)
class TemplateInfo:
    """The template database (the ``pg_template`` fixture)."""

    name: str
    fingerprint: str
    reused: bool
    """True when an earlier run or another worker built it; False when this process did."""
    build_seconds: float = 0.0
    source: str = "reused"
    """``reused``, ``built`` (migrated here) or ``archive`` (restored from the archive)."""
    heads: tuple[str, ...] = ()
    """The alembic heads it holds; more than one is a deploy's ``alembic upgrade head`` failing."""


@dataclass(frozen=True)
class BuildOptions:
    """What a build needs beyond the migrations: where its lock is, whose templates they are."""

    lock_dir: Path
    """Shared by every worker of the run (it holds the file lock)."""
    lock_timeout: float
    project: str
    keep_templates: int
    archive: Archive | None = None


def template_for(server: Server, migrator: Migrator, options: BuildOptions) -> TemplateInfo:
    """The finished template of these migrations on ``server``: looked up, or built; a build
    drops the project's templates beyond the newest ``keep_templates``."""
    fingerprint = template_fingerprint(migrator, server.major, server.role)
    request = BuildRequest(
        name=template_name(fingerprint),
        fingerprint=fingerprint,
        server_url=make_url(server.url),
        migrator=migrator,
        lock_dir=options.lock_dir,
        lock_timeout=options.lock_timeout,
        run_id=server.run_id,
        project=options.project,
        archive=options.archive,
        server_major=server.major,
    )
    with driver_errors(
        f"looking up or building template {request.name}",
        "The half-built template, if any, was dropped; see the server's log.",
    ):
        info = ensure_template(server.loop, server.admin(), server.claim, request)
    if not info.reused:
        drop_quietly(
            server,
            lambda entries: surplus_templates(entries, options.project, options.keep_templates),
            "dropping old templates",
        )
    server.report.record(TemplateReady(info.name, not info.reused, info.build_seconds, info.source))
    return replace(info, heads=migrator.expected_heads() or ())


@dataclass(frozen=True)
class BuildRequest:
    name: str
    fingerprint: str
    server_url: URL
    migrator: Migrator
    lock_dir: Path
    lock_timeout: float
    run_id: str
    project: str
    archive: Archive | None = None
    server_major: int = 0

    @property
    def failure_note(self) -> Path:
        """Where a failed build is recorded, so the run's other workers do not retry it."""
        return self.lock_dir / f"{self.name}.{self.run_id}.failed"


def migrations_key(migrator: Migrator) -> str:
    """What the template is built from: the migrations and the plugin's major. A CI cache of the
    archive is keyed on it (``pgtemplate fingerprint``): it changes when a rebuild is due."""
    return hash_parts(
        [
            ("plugin", __version__.split(".")[0].encode()),
            ("tracking", TRACKING_VERSION.encode()),
            *migrator.fingerprint_parts(),
        ]
    )


def template_fingerprint(migrator: Migrator, server_major: int, role: str = "") -> str:
    """What decides the template's content: the migrations, the server's major, and the role
    that owns its objects (another role could not reset tables it does not own)."""
    return hash_parts(
        [
            ("migrations", migrations_key(migrator).encode()),
            ("server", str(server_major).encode()),
            ("role", role.encode()),
        ]
    )


def ensure_template(
    loop: BackgroundLoop, admin: asyncpg.Connection, lease: Claim, request: BuildRequest
) -> TemplateInfo:
    """Return the finished template, building it under both locks if nobody has yet.

    The lease's shared use lock comes first: from then on no prune can drop the template.
    """
    loop.run(lease.use_template(request.name))
    if _trusted(loop, admin, request):
        return TemplateInfo(request.name, request.fingerprint, reused=True)
    with _file_lock(request), _advisory_lock(loop, admin, request):
        if request.failure_note.exists():
            raise MigrationError(request.failure_note.read_text())
        if _trusted(loop, admin, request):
            return TemplateInfo(request.name, request.fingerprint, reused=True)
        loop.run(databases.drop(admin, request.name))  # unfinished, or built from other heads
        return _build(loop, admin, request)


def _trusted(loop: BackgroundLoop, admin: asyncpg.Connection, request: BuildRequest) -> bool:
    """Finished (marked as the build's last step) and at the migrations' current heads."""
    if loop.run(databases.state(admin, request.name)) != "finished":
        return False
    marker = loop.run(databases.read_marker(admin, request.name))
    return marker is not None and request.migrator.heads_match(marker.alembic)


def _build(loop: BackgroundLoop, admin: asyncpg.Connection, request: BuildRequest) -> TemplateInfo:
    started = time.perf_counter()
    tag = DatabaseTag(
        "template", fingerprint=request.fingerprint, project=request.project, created=now_iso()
    )
    url = for_database(request.server_url, request.name)
    loop.run(databases.create_empty(admin, request.name, tag))
    try:
        verified, source = _from_archive(loop, admin, request, tag)
        if verified is None:
            verified, source = _run_without_event_loop(request.migrator, url, _migrate), "built"
            if request.archive is not None:
                request.archive.store(
                    request.name,
                    request.fingerprint,
                    verified.marker_text,
                    url,
                    request.server_major,
                )
        loop.run(_install_tracking(url))
        if verified.marker_text:
            tag = replace(tag, alembic=verified.marker_text)
            loop.run(databases.set_marker(admin, request.name, tag))
        loop.run(databases.mark_finished(admin, request.name))
    except BaseException as exc:
        loop.run(databases.drop(admin, request.name))
        if isinstance(exc, MigrationError):
            request.failure_note.write_text(str(exc))
        raise
    seconds = time.perf_counter() - started
    return TemplateInfo(request.name, request.fingerprint, False, seconds, source)


def _from_archive(
    loop: BackgroundLoop, admin: asyncpg.Connection, request: BuildRequest, tag: DatabaseTag
) -> tuple[Verified | None, str]:
    """Restore the archived build, verified as a build is; on any doubt, an empty database again
    (and a warning) for the migrations to build from."""
    sql = request.archive.load(request.name, request.fingerprint) if request.archive else None
    if sql is None:
        return None, ""
    url = for_database(request.server_url, request.name)
    try:
        loop.run(_run_sql(url, sql))
        return _run_without_event_loop(request.migrator, url, _verify), "archive"
    except (PgTemplateError, *DRIVER_ERRORS) as exc:
        warnings.warn(
            PgTemplateWarning(
                f"pytest-pgtemplate: the archived template failed ({exc}): rebuilding"
            ),
            stacklevel=2,
        )
    loop.run(databases.drop(admin, request.name))
    loop.run(databases.create_empty(admin, request.name, tag))
    return None, ""


async def _run_sql(url: URL, sql: str) -> None:
    conn = await asyncpg.connect(libpq(url))
    try:
        await archive.restore(conn, sql)
    finally:
        await conn.close()


async def _install_tracking(url: URL) -> None:
    """After the build is verified, before it is trusted: a template without it is never used."""
    conn = await asyncpg.connect(libpq(url))
    try:
        await install(conn)
    finally:
        await conn.close()


def _migrate(migrator: Migrator, url: URL) -> Verified:
    migrator.migrate(url)
    return migrator.verify(url)


def _verify(migrator: Migrator, url: URL) -> Verified:
    return migrator.verify(url)


def _run_without_event_loop(
    migrator: Migrator, url: URL, step: Callable[[Migrator, URL], Verified]
) -> Verified:
    """Alembic's async env.py calls asyncio.run(): give it a thread with no running loop."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pgtemplate-migrate") as pool:
        try:
            return pool.submit(step, migrator, url).result()
        except PgTemplateError:
            raise
        except Exception as exc:
            raise MigrationError(
                f"building the template with {migrator.describe()} failed: "
                f"{type(exc).__name__}: {exc}. The half-built template was dropped."
            ) from exc


@contextmanager
def _file_lock(request: BuildRequest) -> Iterator[None]:
    path = request.lock_dir / f"{request.name}.lock"
    try:
        with FileLock(str(path), timeout=request.lock_timeout):
            yield
    except Timeout:
        raise LockTimeoutError(_lock_message(request, f"file lock {path}")) from None


@contextmanager
def _advisory_lock(
    loop: BackgroundLoop, admin: asyncpg.Connection, request: BuildRequest
) -> Iterator[None]:
    key = build_lock_key(request.name)
    if not loop.run(_poll_advisory_lock(admin, key, request.lock_timeout)):
        raise LockTimeoutError(_lock_message(request, "PostgreSQL advisory lock"))
    try:
        yield
    finally:
        loop.run(admin.execute("SELECT pg_advisory_unlock($1, $2)", *key))


async def _poll_advisory_lock(
    admin: asyncpg.Connection, key: tuple[int, int], timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if await admin.fetchval("SELECT pg_try_advisory_lock($1, $2)", *key):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


def _lock_message(request: BuildRequest, which: str) -> str:
    return (
        f"could not take the {which} for template {request.name} within "
        f"{request.lock_timeout:g} s: another run or worker is still building it. Wait for it, "
        "end a stuck run, or raise pgtemplate_lock_timeout (--pgtemplate-lock-timeout)."
    )
