"""One server URL, rendered for each consumer: asyncpg, SQLAlchemy drivers, libpq tools.

SQLAlchemy's ``URL`` does the work, imported only when a URL is used: loading SQLAlchemy costs a
run a tenth of a second, which a run with no database test must not pay. ``check_url`` and
``redact`` serve the start of a run without it.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from .errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

_POSTGRES_BACKENDS = ("postgresql", "postgres")
_EXAMPLE = "postgresql://postgres@127.0.0.1:5432/postgres"


def check_url(raw: str, what: str = "pgtemplate_url") -> None:
    """The mistakes a URL can hold, each named (a port of ``abc``, ``0`` or ``99999``, another
    database system), before anything connects; ``what`` names where the URL came from."""
    parts = urllib.parse.urlsplit(raw.strip())
    backend = parts.scheme.split("+", 1)[0]
    if not parts.scheme or (not parts.netloc and "host=" not in parts.query):
        raise ConfigurationError(
            f"{what} {redact(raw)!r} is not a database URL; expected e.g. {_EXAMPLE!r}"
        )
    if backend not in _POSTGRES_BACKENDS:
        raise ConfigurationError(
            f"{what} must point at PostgreSQL (got scheme {parts.scheme!r}); "
            f"expected e.g. {_EXAMPLE!r}"
        )
    for port in _ports(parts):
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigurationError(
                f"{what} {redact(raw)!r} has a bad port: expected a number from 1 to 65535, "
                f"e.g. 5432 (got {port!r})"
            )


def _ports(parts: urllib.parse.SplitResult) -> list[str]:
    """Every port the URL gives: one per host (``h1:5432,h2:5433``) and ``?port=``; empty
    ones (``host:``) are left out, as libpq then uses its default."""
    hosts = parts.netloc.rpartition("@")[2].split(",")
    found = [host.rpartition("]")[2].rpartition(":")[2] for host in hosts if ":" in host]
    for value in urllib.parse.parse_qs(parts.query).get("port", []):
        found += value.split(",")
    return [port.strip() for port in found if port.strip()]


def redact(raw: str, mask: str = "***") -> str:
    """``raw`` with its password (if any) masked (``mask=""``: left out), without parsing it as
    SQLAlchemy does."""
    parts = urllib.parse.urlsplit(raw.strip())
    user, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in user:
        return raw.strip()
    name = user.partition(":")[0]
    netloc = f"{name}:{mask}@{host}" if mask else f"{name}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def parse_server_url(raw: str, what: str = "pgtemplate_url") -> URL:
    """Parse a user-supplied URL and normalise it to the plain ``postgresql`` scheme."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    check_url(raw, what)
    example = _EXAMPLE
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            f"{what} {redact(raw)!r} is not a database URL; expected e.g. {example!r}"
        ) from None
    backend = url.drivername.split("+", 1)[0]
    if backend not in _POSTGRES_BACKENDS:
        raise ConfigurationError(
            f"{what} must point at PostgreSQL (got scheme {url.drivername!r}); "
            f"expected e.g. {example!r}"
        )
    return url.set(drivername="postgresql", database=url.database or "postgres")


def for_database(url: URL, database: str) -> URL:
    """The same server and credentials, another database."""
    return url.set(database=database)


def libpq(url: URL) -> str:
    """``postgresql://`` form for asyncpg's DSN parser and for libpq tools such as psql."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def with_driver(url: URL, driver: str) -> str:
    """SQLAlchemy form with ``driver`` (``asyncpg``, ``psycopg``...), password included."""
    return url.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def redacted(url: URL) -> str:
    """Printable form: the password is masked."""
    return url.render_as_string(hide_password=True)


EXPORT_FIELDS = ("url", "sync_url", "libpq_url", "host", "port", "database", "user", "password")
"""What ``NAME={field}`` in pgtemplate_export_env may name: the URL's forms, or one of its parts."""


def export_entries(raw: str) -> tuple[str, ...]:
    """``NAME`` (the URL) or ``NAME={field}`` (one part of it), e.g. ``POSTGRES_DB={database}``;
    space or comma separated."""
    entries = tuple(entry for entry in re.split(r"[\s,]+", raw) if entry)
    fields = "|".join(EXPORT_FIELDS)
    for entry in entries:
        if not re.fullmatch(rf"[A-Za-z_][A-Za-z0-9_]*(=\{{({fields})\}})?", entry):
            raise ConfigurationError(
                "pgtemplate_export_env entries must be environment variable names, or "
                f"NAME={{field}} with field one of {list(EXPORT_FIELDS)} (got {entry!r})"
            )
    return entries


def export_values(entries: tuple[str, ...], url: str) -> dict[str, str]:
    """``NAME`` gets ``url`` as given; ``NAME={field}`` one part of it, for settings split in
    parts (``POSTGRES_SERVER={host}``, ``POSTGRES_DB={database}``)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    parts = {
        "url": with_driver(parsed, "asyncpg"),
        "sync_url": with_driver(parsed, "psycopg"),
        "libpq_url": libpq(parsed),
        "host": parsed.host or "",
        "port": str(parsed.port or 5432),
        "database": parsed.database or "",
        "user": parsed.username or "",
        "password": parsed.password or "",
    }
    values = {}
    for entry in entries:
        name, _, field = entry.partition("=")
        values[name] = parts[field.strip("{}")] if field else url
    return values


def export_env(
    entries: tuple[str, ...], url: str, environ: MutableMapping[str, str] = os.environ
) -> None:
    """``pgtemplate_export_env``: the variables an application reads its database from."""
    environ.update(export_values(entries, url))
