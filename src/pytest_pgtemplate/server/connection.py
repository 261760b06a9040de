"""The server a run works on, as the ``pg_server`` fixture hands it on.

It carries what the server is plus this process's admin connection and lease, so that every
link downstream (template, worker database, empty databases) asks the object it is given, and a
conftest that returns its own ``Server`` (say, for a container it started) redirects them all.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from ..aio import BackgroundLoop, process_loop
from ..lease import Lease
from ..urls import libpq, parse_server_url
from .admin import ServerInfo, connect, describe

T = TypeVar("T")
DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(eq=False)
class Server:
    """A PostgreSQL server and this process's claim on it (the ``pg_server`` fixture).

    ``url`` is the admin URL (maintenance database); ``version``, ``major``, ``superuser``,
    ``fsync``, ``role`` and ``started_by_plugin`` describe the server. Make one for a server of
    your own with ``Server.connect(url)``.
    """

    info: ServerInfo
    loop: BackgroundLoop = field(default_factory=process_loop, repr=False)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    _admin: asyncpg.Connection | None = field(default=None, repr=False)
    _lease: Lease | None = field(default=None, repr=False)

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        started_by_plugin: bool = False,
        loop: BackgroundLoop | None = None,
    ) -> Server:
        """Connect as administrator, check the role's rights, and take this process's lease."""
        loop = loop or process_loop()
        parsed = parse_server_url(url)
        admin = loop.run(connect(parsed, connect_timeout))
        try:
            info = loop.run(describe(admin, parsed, started=started_by_plugin))
        except BaseException:
            loop.run(admin.close())
            raise
        server = cls(info, loop, connect_timeout, admin)
        server.run(server.lease.ensure())
        return server

    @property
    def url(self) -> str:
        return self.info.url

    @property
    def key(self) -> str:
        """Identifies the server (and role) whatever URL spelling reached it."""
        return libpq(make_url(self.info.url))

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def version_num(self) -> int:
        return self.info.version_num

    @property
    def major(self) -> int:
        return self.info.major

    @property
    def started_by_plugin(self) -> bool:
        return self.info.started_by_plugin

    @property
    def superuser(self) -> bool:
        return self.info.superuser

    @property
    def fsync(self) -> bool:
        return self.info.fsync

    @property
    def role(self) -> str:
        return self.info.role

    @property
    def lease(self) -> Lease:
        """The one connection that holds this process's advisory locks on this server."""
        if self._lease is None:
            self._lease = Lease(make_url(self.info.url), self.connect_timeout)
        return self._lease

    def admin(self) -> asyncpg.Connection:
        """The admin connection, reconnected if the server ended it; never the lease's."""
        if self._admin is None or self._admin.is_closed():
            self._admin = self.loop.run(connect(make_url(self.info.url), self.connect_timeout))
        return self._admin

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run database work on the plugin's background loop (fixtures are synchronous)."""
        return self.loop.run(coro)

    def close(self) -> None:
        """Release the lease (and with it every claim) and the admin connection; idempotent."""
        admin, self._admin = self._admin, None
        try:
            if self._lease is not None:
                self.run(self._lease.close())
        finally:
            if admin is not None and not admin.is_closed():
                try:
                    self.run(admin.close(timeout=5))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                    admin.terminate()
