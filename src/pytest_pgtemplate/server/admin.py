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
_HOW_TO_FIX = (
    "Set pgtemplate_url (ini), PGTEMPLATE_URL (env) or --pgtemplate-url to the URL of a "
    "running server's maintenance database, e.g. postgresql://postgres@127.0.0.1:5432/postgres"
)


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


async def connect(url: URL, timeout: float) -> asyncpg.Connection:
    """Connect, translating driver errors into ones that say what to fix."""
    where = redacted(url)
    try:
        return await asyncpg.connect(libpq(url), timeout=timeout)
    except TimeoutError:
        raise ServerUnavailableError(
            f"PostgreSQL at {where} did not answer within {timeout:g} s. {_HOW_TO_FIX}"
        ) from None
    except asyncpg.InvalidCatalogNameError:
        raise ServerUnavailableError(
            f"database {url.database!r} does not exist on {where}; pgtemplate_url must name a "
            "database that exists, normally the maintenance database 'postgres'"
        ) from None
    except (
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidAuthorizationSpecificationError,
    ) as exc:
        raise ServerUnavailableError(
            f"PostgreSQL at {where} rejected user {url.username!r}: {exc}. "
            "Fix the user name or password in pgtemplate_url."
        ) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ServerUnavailableError(
            f"cannot connect to PostgreSQL at {where}: {exc}. Is the server running? {_HOW_TO_FIX}"
        ) from None


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
