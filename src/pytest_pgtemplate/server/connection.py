"""The server a run works on, as the ``pg_server`` fixture hands it on.

It carries what the server is, this process's admin connection and claim, the databases this
process created there (registered before each CREATE, so the end of the run drops them even
after a fixture failed half-way) and the report its work is recorded in. Every link downstream
(template, worker database, empty databases) asks the object it is given, so a conftest that
returns its own ``Server`` (say, for a container it started) redirects them all.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from .. import databases
from ..aio import BackgroundLoop, process_loop
from ..claim import Claim
from ..report import Report
from ..urls import libpq, parse_server_url
from .admin import ServerInfo, connect, describe, driver_errors

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
    report: Report = field(default_factory=Report, repr=False)
    run_id: str = ""
    """The run whose claims this process holds here; set when the run adopts the server."""
    _claim: Claim | None = field(default=None, repr=False)
    _created: dict[str, None] = field(default_factory=dict, repr=False)

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        started_by_plugin: bool = False,
        loop: BackgroundLoop | None = None,
    ) -> Server:
        """Connect as administrator, check the role's rights, and take this process's claim."""
        loop = loop or process_loop()
        parsed = parse_server_url(url)
        admin = loop.run(connect(parsed, connect_timeout))
        try:
            info = loop.run(describe(admin, parsed, started=started_by_plugin))
        except BaseException:
            loop.run(admin.close())
            raise
        server = cls(info, loop, connect_timeout)
        server.run(server.claim.adopt(admin))
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
    def claim(self) -> Claim:
        """The one connection that holds this process's advisory locks on this server."""
        if self._claim is None:
            self._claim = Claim(make_url(self.info.url), self.connect_timeout)
        return self._claim

    def admin(self) -> asyncpg.Connection:
        """The claim's connection, replaced (locks and all) if the server ended it."""
        self.run(self.claim.ensure())
        return self.claim.connection

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run database work on the plugin's background loop (fixtures are synchronous)."""
        return self.loop.run(coro)

    def register(self, name: str) -> None:
        """Before a CREATE DATABASE: whatever happens next, the end of the run drops it."""
        self._created[name] = None

    def drop_own(self, name: str) -> None:
        """Drop a database this run created, proving it by its tag right then (and claim)."""
        self._created.pop(name, None)
        with driver_errors(
            f"dropping {name}", "See the server's log; the run drops what it created."
        ):
            self.run(self.claim.ensure())
            self.run(databases.drop_own(self.admin(), name, self.run_id))

    def close(self) -> None:
        """Drop what this process registered and did not drop yet, then release the claim (and
        with it every lock); idempotent."""
        try:
            for name in list(self._created):
                self.drop_own(name)
        finally:
            self._close_connections()

    def _close_connections(self) -> None:
        if self._claim is not None:
            self.run(self._claim.close())
