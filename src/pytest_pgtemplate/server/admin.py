"""Talking to the server as its administrator: connecting, and what the server is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.engine import URL

from ..errors import InsufficientPrivilegeError, PgTemplateError, ServerUnavailableError
from ..urls import libpq, redacted
from . import reflink

MIN_VERSION_NUM = (
    140000  # the oldest major the test suite runs on (13 would lack idle_session_timeout)
)


@dataclass(frozen=True)
class UrlSource:
    """Who gave the URL, for errors that say what to change: the plugin's settings by default,
    the ``pgtemplate`` command's ``--url`` when it connects."""

    setting: str = "pgtemplate_url"
    how_to_fix: str = (
        "Set pgtemplate_url (ini), PGTEMPLATE_URL (env) or --pgtemplate-url to the URL of a "
        "running server's maintenance database, e.g. postgresql://postgres@127.0.0.1:5432/postgres"
    )
    fewer_clients: str = "run fewer xdist workers (-n)"
    elsewhere: str = "leave pgtemplate_url unset, and the plugin starts a server of its own"


PLUGIN_SETTINGS = UrlSource()


@dataclass(frozen=True)
class ServerInfo:
    """The server the plugin provisions databases on (the ``pg_server`` fixture)."""

    url: str = field(repr=False)
    """Admin URL (``postgresql://``, the maintenance database), usable by psql and asyncpg; with
    its password, so not in ``repr`` (pytest prints reprs in assertion failures)."""
    version: str
    version_num: int
    started_by_plugin: bool
    superuser: bool
    fsync: bool
    role: str = ""
    """The role the plugin works as: it owns the template, so it is part of the fingerprint."""
    reflink: bool = False
    """PostgreSQL 18+ whose data directory is proved to be on this machine and to reflink."""
    reflink_note: str = ""
    """Why (``xfs reflinks``) or why not (``tmpfs does not reflink``); empty before 18."""

    @property
    def major(self) -> int:
        return self.version_num // 10000


async def connect(
    url: URL, timeout: float, source: UrlSource = PLUGIN_SETTINGS
) -> asyncpg.Connection:
    """Connect, translating driver errors into ones that say what to fix."""
    try:
        return await asyncpg.connect(libpq(url), timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ServerUnavailableError(_refused(exc, url, timeout, source)) from None


def _refused(exc: Exception, url: URL, timeout: float, source: UrlSource) -> str:
    where, setting = redacted(url), source.setting
    if isinstance(exc, TimeoutError):
        return f"PostgreSQL at {where} did not answer within {timeout:g} s. {source.how_to_fix}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (
            f"database {url.database!r} does not exist on {where}; {setting} must name a "
            "database that exists, normally the maintenance database 'postgres'"
        )
    if isinstance(
        exc, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        return (
            f"PostgreSQL at {where} rejected user {url.username!r}: {exc}. "
            f"Fix the user name or password in {setting}."
        )
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return _too_many(exc, where, url, source)
    if isinstance(exc, ConnectionError) and "rejected SSL upgrade" in str(exc):
        return (
            f"PostgreSQL at {where} does not accept SSL connections, and {setting} requires "
            f"them (sslmode={url.query.get('sslmode')}): drop sslmode from {setting}, or "
            "enable SSL on the server (ssl = on, with a certificate)"
        )
    return (
        f"cannot connect to PostgreSQL at {where}: {exc}. Is the server running? "
        f"{source.how_to_fix}"
    )


def _too_many(exc: Exception, where: str, url: URL, source: UrlSource) -> str:
    """Which limit the server applied; its numbers cannot be read without a connection."""
    said = str(exc)
    if "for role" in said:
        limit = f"role {url.username!r} is at its CONNECTION LIMIT"
        fixes = [source.fewer_clients, f"ALTER ROLE {url.username} CONNECTION LIMIT <more>"]
    elif "for database" in said:
        limit = f"database {url.database!r} is at its CONNECTION LIMIT"
        fixes = [source.fewer_clients, f"ALTER DATABASE {url.database} CONNECTION LIMIT <more>"]
    else:
        limit = "all the connections its max_connections allows are in use"
        fixes = [source.fewer_clients, "raise max_connections on the server (and restart it)"]
        fixes += [source.elsewhere] if source.elsewhere else []
    fix = ", ".join(fixes[:-1]) + f", or {fixes[-1]}"
    return f"PostgreSQL at {where} refused the connection: {limit} ({said}). Fix: {fix}"


async def describe(conn: asyncpg.Connection, url: URL, *, started: bool) -> ServerInfo:
    """Read what the plugin needs to know about the server, and check the role's rights."""
    row = await conn.fetchrow(
        "SELECT version() AS version,"
        " current_setting('server_version_num')::int AS version_num,"
        " current_setting('fsync') = 'on' AS fsync, r.rolsuper, r.rolcreatedb, r.rolname"
        " FROM pg_roles r WHERE r.rolname = current_user"
    )
    if row["version_num"] < MIN_VERSION_NUM:
        raise ServerUnavailableError(
            f"{redacted(url)} runs {row['version'].split(',')[0]}; pytest-pgtemplate needs "
            "PostgreSQL 14 or newer (tested on 14 to 18). Point pgtemplate_url at a newer server, "
            "or unset it to let the plugin start its own."
        )
    if not (row["rolsuper"] or row["rolcreatedb"]):
        role = row["rolname"]
        raise InsufficientPrivilegeError(
            f"role {role!r} may not create databases, which pytest-pgtemplate needs for the "
            f"template and the worker databases. Run ALTER ROLE {role} CREATEDB as a superuser, "
            "or put a role that has CREATEDB into pgtemplate_url."
        )
    evidence = await _reflink(conn) if row["version_num"] >= 180000 else None
    return ServerInfo(
        url=libpq(url),
        version=row["version"],
        version_num=row["version_num"],
        started_by_plugin=started,
        superuser=row["rolsuper"],
        fsync=row["fsync"],
        role=row["rolname"],
        reflink=evidence.supported if evidence else False,
        reflink_note=evidence.reason if evidence else "",
    )


async def _reflink(conn: asyncpg.Connection) -> reflink.Reflink:
    """Only a superuser or pg_read_all_settings sees data_directory: otherwise, no evidence."""
    row = await conn.fetchrow(
        "SELECT (SELECT setting FROM pg_settings WHERE name = 'data_directory') AS data_directory,"
        " CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')"
        " THEN (SELECT system_identifier FROM pg_control_system()) END AS system_identifier"
    )
    return reflink.check(row["data_directory"], row["system_identifier"])


DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@contextmanager
def driver_errors(action: str, fix: str) -> Iterator[None]:
    """A driver error becomes one line that says what the plugin was doing and what to do."""
    try:
        yield
    except asyncpg.InsufficientPrivilegeError as exc:
        raise InsufficientPrivilegeError(
            f"{action} failed: the role may not do this ({exc}). {fix}"
        ) from None
    except DRIVER_ERRORS as exc:
        raise PgTemplateError(f"{action} failed: {type(exc).__name__}: {exc}. {fix}") from None
