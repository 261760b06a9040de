"""One worker's database: cloned from the template, reset around tests, swapped, kept, dropped.

``WorkerDatabase`` is what the ``pg_worker_database`` fixture returns, and it carries its own
state: a conftest that wraps the fixture hands the same object on, and everything downstream
(``pg_database``, engines, ``--pgtemplate-keep-failed``) asks the object, not a registry.
``recreate`` never waits for a clone: a spare is prepared in the background during the next
test, and swapped in by rename.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url

from . import databases
from .databases import CloneOptions, clone_options
from .errors import PgTemplateError, ResetError
from .naming import DatabaseTag, empty_name, kept_name, now_iso, quote_ident, spare_name
from .report import WorkerCloned
from .reset.resetter import Backend, Known, ResetOutcome, Resetter, open_resetter
from .server.admin import DRIVER_ERRORS, connect, driver_errors
from .server.connection import Server
from .template import TemplateInfo
from .urls import for_database, libpq, with_driver

_SEE_LOG = "See the server's log; the run drops what it created."

_RECLONE = "it will be re-cloned from the template before the next test"

CLAIM_VERIFY_EVERY = 1.0
"""Seconds: a check before a test skipped since nothing ran still verifies the claim this often
(a lost claim connection is replaced, its locks taken again, before another run's sweep)."""


class _ClaimFailed(Exception):
    """The claim's liveness check failed during a reset: its own error, not a reset's."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Origin:
    """Where a worker database comes from, and how to reach the server."""

    server_url: str
    template: str
    tag: DatabaseTag
    clone: CloneOptions
    watch_databases: bool = False
    """Report databases that appear on the server (the plugin's own server: nobody else's)."""


@dataclass(eq=False)
class WorkerDatabase:
    """This worker's own database (the ``pg_worker_database`` fixture).

    ``url`` is ``postgresql+asyncpg://`` for ``create_async_engine``; ``sync_url`` is
    ``postgresql+psycopg://``; ``libpq_url`` the ``postgresql://`` form for psql and asyncpg.
    ``generation`` grows whenever the database is replaced (``recreate``, a kept copy, a failed
    reset): pooled connections of an engine built before then point at a dropped database, so
    engines a project builds itself should watch it or use ``pool_pre_ping``.
    """

    name: str
    url: str = field(repr=False)  # they may carry a password: never in a test's report
    sync_url: str = field(repr=False)
    _slot: _Clone | None = field(default=None, repr=False)
    _server: Server | None = field(default=None, repr=False)
    """For a database without a reset (``pg_empty_database``): where to drop it."""
    _cleaners: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def add_cleaner(self, cleaner: Callable[[], None]) -> None:
        """An engine pool handing out connections to this database, to clean after each test."""
        self._cleaners.append(cleaner)

    def clean_connections(self) -> None:
        """After a test: pooled connections lose its session state (an advisory lock held on
        one would block the next test's other connections until the pool handed it out)."""
        for cleaner in self._cleaners:
            cleaner()

    @property
    def libpq_url(self) -> str:
        return libpq(make_url(self.url))

    @property
    def has_state(self) -> bool:
        """Made by the plugin's fixture chain (it can reset, recreate and keep itself)."""
        return self._slot is not None

    @property
    def generation(self) -> int:
        return self._slot.generation if self._slot else 0

    @property
    def epoch(self) -> int:
        """Grows as each test starts: a pooled connection checked out again is cleaned first."""
        return self._slot.epoch if self._slot else 0

    def engine_options(self) -> dict[str, object]:
        """Keyword arguments for an engine a project builds itself on ``url`` or ``sync_url``.

        ``pool_pre_ping`` replaces pooled connections that a re-clone ended (``recreate``, a
        kept copy, a failed reset): the engine keeps working across them.
        """
        return {"pool_pre_ping": True}

    def ensure_clean(self, *, nothing_ran: bool = False) -> ResetOutcome:
        """Before a test: re-clone a database whose reset failed, undo writes made meanwhile.

        ``nothing_ran``: no test and no fixture ran since the last reset, which left the
        database in the template's state: the check is skipped (but for the claim's liveness
        round trip, due once a second)."""
        return self._state().ensure_clean(nothing_ran=nothing_ran)

    def reset(self, strategy: str) -> ResetOutcome:
        """After a test: put the database back to the template's state with ``strategy``."""
        return self._state().reset(strategy)

    def recreate(self) -> tuple[Backend, ...]:
        """Replace the database by a fresh clone of the template."""
        return self._state().recreate()

    def keep_copy(self) -> str:
        """Copy the database as it is now, for inspection; returns the copy's libpq URL."""
        return self._state().keep_copy()

    def drop(self) -> None:
        if self._slot is not None:
            self._slot.drop()
        elif self._server is not None:
            self._server.drop_own(self.name)

    def _state(self) -> _Clone:
        if self._slot is None:
            raise PgTemplateError(
                f"{self.name} was not created by pytest-pgtemplate's pg_worker_database fixture; "
                "an overriding fixture must return (or wrap) the plugin's own object"
            )
        return self._slot


def worker_database(server_url: str, name: str) -> WorkerDatabase:
    """Names and URLs only: deterministic, so they can be exported before the database exists."""
    url = for_database(make_url(server_url), name)
    return WorkerDatabase(name, with_driver(url, "asyncpg"), with_driver(url, "psycopg"))


def clone_worker(
    server: Server, template: TemplateInfo, *, name: str, project: str
) -> WorkerDatabase:
    """Claim the name, register it for dropping, then clone: a failure leaves nothing
    undroppable. Cloning copies the tracking too: the worker reads the layout, copies nothing."""
    database = worker_database(server.url, name)
    tag = DatabaseTag(
        "worker",
        run_id=server.run_id,
        template=template.name,
        owner=name,
        project=project,
        created=now_iso(),
    )
    size = template_bytes(server, template.name)
    origin = Origin(
        server_url=server.url,
        template=template.name,
        tag=tag,
        clone=clone_options(server.info, template_bytes=size),
        watch_databases=server.started_by_plugin,
    )
    started = time.perf_counter()
    for each in (name, spare_name(name)):
        server.register(each)
    server.run(server.claim.claim(name))
    slot = _Clone(name, origin, server)
    database._slot = slot
    slot.create()
    tracking = slot.resetter.describe() if slot.resetter is not None else ""
    seconds = time.perf_counter() - started
    server.report.record(WorkerCloned(seconds, origin.clone.describe(), tracking))
    return database


def empty_database(server: Server, *, owner: str, number: int, project: str) -> WorkerDatabase:
    """From template0, owned by the role in use; claimed like the worker's, so swept alike."""
    database = worker_database(server.url, empty_name(owner, number))
    database._server = server
    tag = DatabaseTag(
        "worker", run_id=server.run_id, owner=owner, project=project, created=now_iso()
    )
    server.register(database.name)
    with driver_errors(f"creating the empty database {database.name}", _SEE_LOG):
        server.run(server.claim.claim(owner))
        clone = databases.clone(
            server.admin(), "template0", database.name, tag, clone_options(server.info)
        )
        server.run(clone)
    return database


def template_bytes(server: Server, template: str) -> int | None:
    """Only where it decides the clone method: a reflinking data directory with fsync on."""
    if not (server.info.reflink and server.fsync):
        return None
    size = "SELECT pg_database_size(oid) FROM pg_database WHERE datname = $1"
    try:
        return int(server.run(server.admin().fetchval(size, template)))
    except (*DRIVER_ERRORS, TypeError):
        return None


@dataclass
class _Clone:
    name: str
    origin: Origin
    server: Server
    resetter: Resetter | None = None
    known: Known | None = None
    """The template's layout and the clone's own settings: kept across reconnects and clones."""
    fresh: bool = True
    """The database is a clone no test has touched: its resetter records its settings."""
    dirty: bool = False
    generation: int = 0
    epoch: int = 0
    _spare: concurrent.futures.Future[None] | None = field(default=None, repr=False)
    _kept: int = 0
    _verified_at: float = float("-inf")
    """When the check before a test last ran (the claim's liveness is verified with it)."""

    def create(self) -> None:
        with self._errors(f"cloning {self.origin.template} into {self.name}"):
            self._clone(self.name)
            self.fresh = True
            self._open_resetter()

    def ensure_clean(self, *, nothing_ran: bool = False) -> ResetOutcome:
        self.epoch += 1
        recent = time.monotonic() - self._verified_at < CLAIM_VERIFY_EVERY
        if nothing_ran and recent and not self.dirty and self.resetter is not None:
            self.server.report.checks_skipped += 1
            return ResetOutcome()
        self._verified_at = time.monotonic()
        if self.dirty or self.resetter is None:
            self.server.run(self.server.claim.ensure(verify=True))
            if self.dirty:
                return ResetOutcome(self.recreate())
            return self._run_reset(lambda resetter: resetter.ensure_pristine())
        # The claim's liveness round trip overlaps the check (one wake-up of two idle backends
        # instead of two in a row); the restore, if any, waits for both.
        return self._run_reset(
            lambda resetter: resetter.ensure_pristine(alongside=self._claim_alive()),
            claimed=True,
        )

    async def _claim_alive(self, *, verify: bool = True) -> None:
        try:
            await self.server.claim.ensure(verify=verify)
        except Exception as exc:  # not the reset's failure: raised as it is, below
            raise _ClaimFailed(exc) from exc

    async def _after_claim(self, work: Coroutine[Any, Any, ResetOutcome]) -> ResetOutcome:
        try:
            await self._claim_alive(verify=False)
        except BaseException:
            work.close()  # never started: no "was never awaited" warning
            raise
        return await work

    def reset(self, strategy: str) -> ResetOutcome:
        self.server.report.resets += 1
        if strategy == "recreate":
            return ResetOutcome(self.recreate())
        return self._run_reset(lambda resetter: resetter.reset(strategy))

    def _run_reset(
        self,
        action: Callable[[Resetter], Coroutine[Any, Any, ResetOutcome]],
        *,
        claimed: bool = False,
    ) -> ResetOutcome:
        if not claimed and self.resetter is None:
            self.server.run(self.server.claim.ensure())
            claimed = True
        try:
            if self.resetter is None:
                self._open_resetter()
            assert self.resetter is not None
            work = action(self.resetter)
            # One hop to the plugin's loop: the claim's look (no round trip) runs there too.
            outcome = self.server.run(work if claimed else self._after_claim(work))
        except _ClaimFailed as failed:
            raise failed.error from None
        except (*DRIVER_ERRORS, ResetError) as exc:
            self.dirty = True
            self.close_connection()
            raise ResetError(
                f"resetting {self.name} failed ({type(exc).__name__}: {exc}); {_RECLONE}"
            ) from None
        if outcome.schema_changed:
            self.recreate()
        return outcome

    def recreate(self) -> tuple[Backend, ...]:
        """Swap in a fresh clone: the spare if one is ready, a new clone otherwise."""
        leaked = self._end_leaked()
        self.close_connection()
        self.generation += 1
        with self._errors(f"re-cloning {self.name} from {self.origin.template}"):
            self.server.run(self.server.claim.ensure())
            self.server.run(databases.drop_own(self.server.admin(), self.name, self._run_id))
            if self._take_spare():
                self.server.run(
                    self.server.admin().execute(_rename(spare_name(self.name), self.name))
                )
            else:
                self._clone(self.name)
            self.dirty = False
            self.fresh = True
            self._open_resetter()
        self.prepare_spare()
        return leaked

    def prepare_spare(self) -> None:
        if self._spare is None:
            self._spare = self.server.loop.submit(self._clone_spare())

    def keep_copy(self) -> str:
        """Copy the database as the failed test left it; a copy needs every connection gone."""
        self._kept += 1
        name = kept_name(self.name, self._kept)
        self.close_connection()
        self.generation += 1  # the copy ends every connection, pooled ones too
        with self._errors(f"keeping a copy of {self.name} as {name}"):
            admin = self.server.admin()
            self.server.run(databases.terminate_connections(admin, self.name))
            tag = DatabaseTag(
                "kept",
                run_id=self._run_id,
                template=self.origin.template,
                project=self.origin.tag.project,
            )
            self.server.run(databases.clone(admin, self.name, name, tag, self.origin.clone))
        return libpq(for_database(make_url(self.origin.server_url), name))

    def drop(self) -> None:
        self._end_leaked()
        self.close_connection()
        self._take_spare()
        for name in (spare_name(self.name), self.name):
            self.server.drop_own(name)

    def close_connection(self) -> None:
        resetter, self.resetter = self.resetter, None
        if resetter is not None:
            try:
                self.server.run(resetter.close())
            except DRIVER_ERRORS:
                resetter.conn.terminate()

    @property
    def _run_id(self) -> str:
        return self.origin.tag.run_id

    def _errors(self, action: str) -> AbstractContextManager[None]:
        return driver_errors(action, _SEE_LOG)

    def _clone(self, name: str) -> None:
        origin = self.origin
        self.server.run(
            databases.clone(self.server.admin(), origin.template, name, origin.tag, origin.clone)
        )

    async def _clone_spare(self) -> None:
        """On a connection of its own: the admin connection stays free for the foreground."""
        origin, name = self.origin, spare_name(self.name)
        conn = await connect(make_url(origin.server_url), self.server.connect_timeout)
        try:
            await databases.drop_own(conn, name, self._run_id)
            await databases.clone(conn, origin.template, name, origin.tag, origin.clone)
        finally:
            await conn.close()

    def _take_spare(self) -> bool:
        spare, self._spare = self._spare, None
        if spare is None:
            return False
        try:
            spare.result()
        except DRIVER_ERRORS:
            return False
        return True

    def _end_leaked(self) -> tuple[Backend, ...]:
        """Before a DROP: open transactions end, prepared ones (DROP refuses them) roll back."""
        if self.resetter is None:
            return ()
        try:
            leaked = self.server.run(self.resetter.end_leaked_backends())
            self.server.run(self.resetter.rollback_prepared())
        except DRIVER_ERRORS:
            return ()
        return leaked

    def _open_resetter(self) -> None:
        origin = self.origin
        dsn = libpq(for_database(make_url(origin.server_url), self.name))
        self.resetter = self.server.run(
            open_resetter(
                dsn,
                self.name,
                self.server.connect_timeout,
                self.known,
                fresh=self.fresh,
                watch_databases=origin.watch_databases,
            )
        )
        self.known, self.fresh = self.resetter.known, False


def _rename(old: str, new: str) -> str:
    return f"ALTER DATABASE {quote_ident(old)} RENAME TO {quote_ident(new)}"
