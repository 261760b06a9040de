"""The suite's server and its clean-up, kept apart from pytest's hooks so both stay small.

By default each process that runs tests starts a PostgreSQL server of its own with the plugin's
library (a numbered slot in a cache only this suite uses, on tmpfs, stopped at the end, reaped
if the process is killed), so the suite needs no server and concurrent runs never meet.
``PGTEMPLATE_TEST_URL`` points the suite at an external server instead, which other people may
share: there the suite drops only databases it can prove are its own (``Owned``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from pytest_pgtemplate.naming import DatabaseTag
from pytest_pgtemplate.server.cache import cache_root
from pytest_pgtemplate.server.own import OwnServer, stop
from pytest_pgtemplate.server.per_run import LocalServerRequest, start_now

ENV_VAR = "PGTEMPLATE_TEST_URL"
PROJECT_PREFIX = "pgtsuite_"
"""Every inner project's ``pgtemplate_project`` starts so; the rest is random."""

_SYSTEM_DATABASES = ("postgres", "template0", "template1")
_RUN_DATABASE = re.compile(r"pgtemplate_([0-9a-f]{12})_[a-z0-9_]+")
_LISTING = (
    "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
    " WHERE datname LIKE 'pgtemplate\\_%'"
)


def new_project_name() -> str:
    return PROJECT_PREFIX + secrets.token_hex(6)


def suite_cache() -> Path:
    """Next to the plugin's default cache, never shared with a user's own runs."""
    return Path(f"{cache_root()}-suite")


@dataclass
class SuiteServer:
    """The server this process's tests use; ``embedded`` is set when this process started it."""

    url: str
    embedded: OwnServer | None = None

    @classmethod
    def open(cls) -> SuiteServer:
        external = os.environ.get(ENV_VAR)
        if external:
            return cls(external)
        request = LocalServerRequest(
            owner_pid=os.getpid(), bin_dir=None, cache_dir=suite_cache(), fresh=False
        )
        server = start_now(request)
        suite = cls(server.url, server)
        suite.drop_leftovers()
        return suite

    def drop_leftovers(self) -> None:
        """A warm start inherits what a killed run of the suite left: the server is ours alone."""
        with psycopg.connect(self.url, autocommit=True) as admin:
            rows = admin.execute("SELECT datname FROM pg_database").fetchall()
            for (name,) in rows:
                if name not in _SYSTEM_DATABASES:
                    drop_database(admin, name)

    def close(self) -> None:
        if self.embedded is not None:
            stop(self.embedded)
            self.embedded = None


@dataclass
class Owned:
    """What one test made on the server: its projects' databases, and names it created by hand.

    A database is ours when its marker names one of ``projects`` (every project name is random),
    or when it is unmarked and named ``pgtemplate_<run>_...`` for one of those databases' runs:
    a worker killed between CREATE DATABASE and COMMENT leaves such a one.
    """

    projects: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)

    def databases(self, admin: psycopg.Connection) -> dict[str, str]:
        """Name -> kind (``template``, ``worker``, ``kept``; ``worker`` for unmarked ones)."""
        markers = {
            name: DatabaseTag.from_comment(comment) for name, comment in admin.execute(_LISTING)
        }
        marked = {
            name: marker
            for name, marker in markers.items()
            if marker is not None and marker.project in self.projects
        }
        runs = {marker.run_id for marker in marked.values() if marker.run_id}
        found: dict[str, str] = {name: marker.kind for name, marker in marked.items()}
        for name, marker in markers.items():
            if marker is None and (match := _RUN_DATABASE.fullmatch(name)) and match[1] in runs:
                found[name] = "worker"
        return found

    def drop_all(self, admin: psycopg.Connection) -> None:
        for name in sorted(set(self.databases(admin)) | self.names):
            drop_database(admin, name)


def drop_database(conn: psycopg.Connection, name: str) -> None:
    """Tolerates a database that went away meanwhile (its own run, or a sweep, dropped it).

    Only a template is altered first: on PostgreSQL 15 an ALTER DATABASE that meets a concurrent
    DROP of the same database is FATAL, and would end ``conn``.
    """
    row = conn.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (name,))
    found = row.fetchone()
    if found is None:
        return
    if found[0]:
        try:
            conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
        except psycopg.errors.InvalidCatalogName:
            return
        except psycopg.errors.ObjectNotInPrerequisiteState:
            pass  # an interrupted DROP left it invalid: dropping it again finishes the job
    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


def with_user(url: str, user: str, password: str | None) -> str:
    """``url`` with another role and its password: the plugin's own server (the suite's, by
    default) lets no one in without one (``None`` or empty: no password, as a trust server)."""
    parsed = make_url(url).set(username=user, password=password or None)
    return parsed.render_as_string(hide_password=False)


def new_role_password() -> str:
    """For a role a test creates (``CREATE ROLE ... PASSWORD``): random, as the server is
    reachable over TCP by every local OS user."""
    return secrets.token_urlsafe(16)


@contextlib.contextmanager
def temporary_role(admin: psycopg.Connection, attributes: str) -> Iterator[tuple[str, str]]:
    """A login role of this test's own, ``CREATE ROLE ... <attributes>``; dropped after, pass or
    fail. Yields its name and password."""
    role, password = f"pgtemplate_test_{secrets.token_hex(4)}", new_role_password()
    admin.execute(f"CREATE ROLE {role} LOGIN {attributes} PASSWORD '{password}'")
    try:
        yield role, password
    finally:
        admin.execute(f"DROP ROLE {role}")
