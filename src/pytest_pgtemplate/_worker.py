"""One worker's database: cloned from the template, reset after tests, swapped, kept, dropped.

``recreate`` never waits for a clone: a spare clone is prepared in the background while the
next test runs, and swapped in by rename.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.engine import URL

from . import _databases
from ._aio import BackgroundLoop
from ._errors import ResetError
from ._naming import Marker, kept_name, quote_ident, spare_name
from ._reset import LeakedBackend, Resetter, open_resetter
from ._server import connect
from ._snapshot import Snapshot
from ._urls import for_database, libpq

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@dataclass(frozen=True)
class Origin:
    """Where a worker database comes from, and how to reach the server."""

    server_url: URL
    template: str
    marker: Marker
    file_copy: bool
    connect_timeout: float


@dataclass
class WorkerSlot:
    name: str
    origin: Origin
    loop: BackgroundLoop
    admin: asyncpg.Connection
    resetter: Resetter | None = None
    snapshot: Snapshot | None = None
    """The pristine clone's state; kept across reconnects, renewed with every fresh clone."""
    dirty: bool = False
    _spare: concurrent.futures.Future[None] | None = field(default=None, repr=False)
    _kept: int = 0

    def create(self) -> None:
        self.loop.run(_databases.drop(self.admin, self.name))
        self._clone(self.name)
        self.snapshot = None
        self._open_resetter()

    def reset(self, strategy: str) -> list[LeakedBackend]:
        if self.resetter is None:
            self._open_resetter()
        assert self.resetter is not None
        try:
            return self.loop.run(self.resetter.reset(strategy))
        except (*_DRIVER_ERRORS, ResetError) as exc:
            self.dirty = True
            self.close_connection()
            raise ResetError(
                f"resetting {self.name} failed ({type(exc).__name__}: {exc}); it will be "
                "re-cloned from the template before the next test"
            ) from exc

    def recreate(self) -> list[LeakedBackend]:
        """Swap in a fresh clone: the spare if one is ready, a new clone otherwise."""
        leaked = self._end_leaked()
        self.close_connection()
        self.loop.run(_databases.drop(self.admin, self.name))
        if self._take_spare():
            self.loop.run(self.admin.execute(self._rename(spare_name(self.name), self.name)))
        else:
            self._clone(self.name)
        self.dirty = False
        self._open_resetter()  # the snapshot stays valid: every clone of the template is alike
        self.prepare_spare()
        return leaked

    def prepare_spare(self) -> None:
        if self._spare is None:
            self._spare = self.loop.submit(self._clone_spare())

    def keep_copy(self) -> str:
        """Copy the database as the failed test left it; a copy needs every connection gone."""
        self._kept += 1
        name = kept_name(self.name, self._kept)
        self.close_connection()
        self.loop.run(_databases.terminate_connections(self.admin, self.name))
        marker = Marker("kept", run_id=self.origin.marker.run_id, template=self.origin.template)
        self.loop.run(_databases.clone(self.admin, self.name, name, marker, file_copy=True))
        return libpq(for_database(self.origin.server_url, name))

    def drop(self) -> None:
        self.close_connection()
        self._take_spare()
        for name in (spare_name(self.name), self.name):
            self.loop.run(_databases.drop(self.admin, name))

    def _clone(self, name: str) -> None:
        origin = self.origin
        self.loop.run(
            _databases.clone(
                self.admin, origin.template, name, origin.marker, file_copy=origin.file_copy
            )
        )

    async def _clone_spare(self) -> None:
        """On a connection of its own: the admin connection stays free for the foreground."""
        origin, name = self.origin, spare_name(self.name)
        conn = await connect(origin.server_url, origin.connect_timeout)
        try:
            await _databases.drop(conn, name)
            await _databases.clone(
                conn, origin.template, name, origin.marker, file_copy=origin.file_copy
            )
        finally:
            await conn.close()

    def _take_spare(self) -> bool:
        spare, self._spare = self._spare, None
        if spare is None:
            return False
        try:
            spare.result()
        except _DRIVER_ERRORS:
            return False
        return True

    def _end_leaked(self) -> list[LeakedBackend]:
        if self.resetter is None:
            return []
        try:
            return self.loop.run(self.resetter.end_leaked_backends())
        except _DRIVER_ERRORS:
            return []

    def _open_resetter(self) -> None:
        dsn = libpq(for_database(self.origin.server_url, self.name))
        timeout = self.origin.connect_timeout
        self.resetter = self.loop.run(open_resetter(dsn, self.name, timeout, self.snapshot))
        self.snapshot = self.resetter.snapshot

    def close_connection(self) -> None:
        resetter, self.resetter = self.resetter, None
        if resetter is not None:
            try:
                self.loop.run(resetter.close())
            except (*_DRIVER_ERRORS, TimeoutError):
                resetter.conn.terminate()

    @staticmethod
    def _rename(old: str, new: str) -> str:
        return f"ALTER DATABASE {quote_ident(old)} RENAME TO {quote_ident(new)}"
