"""What every migrator offers the core, and the small helpers they share."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..urls import export_values

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

T = TypeVar("T")


@dataclass(frozen=True)
class Verified:
    """What ``verify`` found in a freshly built template (the core records it in the marker)."""

    alembic_heads: tuple[str, ...] | None
    """Sorted revisions the template's alembic version table(s) hold (after a successful
    verify: the script directory's heads); None when the template has no version table."""
    tables: int
    """Tables in the template outside PostgreSQL's own schemas (version tables excluded)."""

    @property
    def marker_text(self) -> str:
        """The form for ``DatabaseTag.alembic``: space separated, empty when there is no version."""
        return " ".join(self.alembic_heads or ())


class Migrator(Protocol):
    """What builds the template, what decides its fingerprint, and how to trust the result.

    ``migrate`` and ``verify`` run on a thread with no event loop (alembic's async env.py calls
    ``asyncio.run()``); the others are cheap and run in every worker of every run.
    """

    def describe(self) -> str:
        """Short form for the header, e.g. ``alembic (/app/alembic.ini)``."""

    def fingerprint_parts(self) -> list[tuple[str, bytes]]:
        """(label, content) pairs that decide the template's content."""

    def fingerprint_note(self) -> str:
        """One line for the header: what the fingerprint covers, with a warning if partial."""

    def expected_heads(self) -> tuple[str, ...] | None:
        """Sorted alembic head(s) the template must hold; None when not an alembic project.

        Cheap (no alembic import, revision files read as text)."""

    def heads_match(self, recorded: str) -> bool:
        """Whether a finished template whose marker records ``recorded`` (``DatabaseTag.alembic``,
        space separated, "" for none) is still at the migrations' head(s).

        The core refuses (rebuilds) a finished template for which this is False."""

    def migrate(self, url: URL) -> None:
        """Bring the empty database at ``url`` to the wanted schema."""

    def verify(self, url: URL) -> Verified:
        """Raise MigrationError unless the database at ``url`` holds what ``migrate`` built."""


def heads_match(expected: tuple[str, ...] | None, recorded: str, *, required: bool) -> bool:
    """``required``: the template must hold the heads (alembic builds). Otherwise (a callable
    or metadata build that may never run alembic) only a recorded revision is compared."""
    if expected is None or (not recorded and not required):
        return True
    return tuple(sorted(recorded.split())) == expected


@contextmanager
def exported(names: tuple[str, ...], value: str) -> Iterator[None]:
    """Point the app's own settings (``DATABASE_URL``...) at the template while migrating."""
    values = export_values(names, value)
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def run_coroutine(awaitable: Awaitable[T]) -> T:
    """Run on the migrate thread, which has no event loop of its own."""

    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def describe_error(exc: BaseException) -> str:
    """One line: the driver's own error and the statement, without SQLAlchemy's wrapping."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        cause = exc.orig.__cause__ or exc.orig if exc.orig is not None else exc
        statement = " ".join((exc.statement or "").split())
        return f"{type(cause).__name__}: {cause} (while running: {statement[:200]})"
    return f"{type(exc).__name__}: {exc}"


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then its causes and contexts (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
