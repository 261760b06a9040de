"""Migrators: what builds the template's schema, and what its fingerprint is made of.

Like pgtestdb's ``Migrator``, a migrator only answers two questions: which inputs decide the
result (for the fingerprint) and how to apply them to an empty database.
"""

from __future__ import annotations

import asyncio
import configparser
import importlib
import importlib.resources
import inspect
import logging
import os
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import URL

from ._errors import ConfigurationError, MigrationError
from ._fingerprint import file_parts, files_under
from ._urls import with_driver


class Migrator(Protocol):
    def describe(self) -> str: ...

    def fingerprint_parts(self) -> list[tuple[str, bytes]]: ...

    def migrate(self, url: URL) -> None:
        """Bring the empty database at ``url`` to the wanted schema; runs with no event loop."""


@dataclass
class AlembicMigrator:
    """``alembic upgrade head`` in-process, against the template database."""

    ini_path: Path
    export_env: tuple[str, ...] = ()
    _config: configparser.ConfigParser | None = field(default=None, init=False, repr=False)

    def describe(self) -> str:
        return f"alembic ({self.ini_path.name})"

    def fingerprint_parts(self) -> list[tuple[str, bytes]]:
        script_dir = self._script_directory()
        parts = file_parts(script_dir.parent, files_under(script_dir))
        return [("alembic.ini", self.ini_path.read_bytes()), *parts]

    def migrate(self, url: URL) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config(str(self._existing_ini()))
        config.set_main_option("sqlalchemy.url", self._url_for_env(url).replace("%", "%%"))
        with _exported(self.export_env, with_driver(url, "asyncpg")), _revision_log() as log:
            try:
                command.upgrade(config, "head")
            except BaseException as exc:
                raise MigrationError(_migration_failure(exc, log.revision)) from exc

    def _existing_ini(self) -> Path:
        if not self.ini_path.is_file():
            raise ConfigurationError(
                f"alembic config {str(self.ini_path)!r} does not exist. Set pgtemplate_alembic_ini "
                "to your alembic.ini, or pgtemplate_migrate = 'package.module:function' to build "
                "the schema without alembic."
            )
        return self.ini_path

    def _main_option(self, name: str) -> str:
        """Read ``[alembic]`` as alembic does (``%(here)s``), without importing alembic (66 ms):
        a run that reuses its template never needs alembic at all."""
        if self._config is None:
            self._config = configparser.ConfigParser(defaults={"here": str(self.ini_path.parent)})
            self._config.read(self._existing_ini())
        return str(self._config.get("alembic", name, fallback=""))

    def _script_directory(self) -> Path:
        location = self._main_option("script_location")
        if not location:
            raise ConfigurationError(f"{self.ini_path} has no script_location in [alembic]")
        package, _, inside = location.partition(":")
        if inside and not Path(location).is_absolute() and "/" not in package:
            path = Path(str(importlib.resources.files(package))) / inside  # "package:dir" form
        else:
            path = Path(location)
        if not path.is_absolute():
            path = self.ini_path.parent / path
        if not path.is_dir():
            raise ConfigurationError(
                f"alembic script_location {str(path)!r} (from {self.ini_path}) is not a directory"
            )
        return path

    def _url_for_env(self, url: URL) -> str:
        """Keep the driver the project's env.py was written for (async or sync); default asyncpg."""
        configured = self._main_option("sqlalchemy.url")
        scheme = configured.split("://", 1)[0]
        driver = scheme.split("+", 1)[1] if "+" in scheme else ""
        if scheme and not driver:
            return url.set(drivername="postgresql").render_as_string(hide_password=False)
        return with_driver(url, driver or "asyncpg")


@dataclass
class CallableMigrator:
    """``package.module:function`` called with the template's URL (for ``create_all`` projects)."""

    spec: str
    export_env: tuple[str, ...] = ()

    def describe(self) -> str:
        return self.spec

    def fingerprint_parts(self) -> list[tuple[str, bytes]]:
        """The callable's whole top-level package: models usually live beside it."""
        module = importlib.import_module(self.spec.partition(":")[0])
        root_name = module.__name__.split(".", 1)[0]
        root = importlib.import_module(root_name)
        source = Path(inspect.getfile(root))
        if source.name == "__init__.py":
            base = source.parent
            files = [p for p in files_under(base) if p.suffix == ".py"]
            return [("spec", self.spec.encode()), *file_parts(base.parent, files)]
        return [("spec", self.spec.encode()), (source.name, source.read_bytes())]

    def migrate(self, url: URL) -> None:
        function = self._load()
        target = with_driver(url, "asyncpg")
        with _exported(self.export_env, target):
            try:
                result = function(target)
                if inspect.isawaitable(result):
                    asyncio.run(_await(result))
            except BaseException as exc:
                raise MigrationError(
                    f"{self.spec} raised {describe_error(exc)}. The half-built template was "
                    "dropped; fix the function and run again."
                ) from exc

    def _load(self) -> Callable[[str], Any]:
        module_name, _, attribute = self.spec.partition(":")
        if not module_name or not attribute:
            raise ConfigurationError(
                f"pgtemplate_migrate must look like 'package.module:function' (got {self.spec!r})"
            )
        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(
                f"pgtemplate_migrate {self.spec!r} cannot be loaded: {exc}"
            ) from None
        if not callable(function):
            raise ConfigurationError(f"pgtemplate_migrate {self.spec!r} is not callable")
        return function  # type: ignore[no-any-return]


async def _await(awaitable: Any) -> None:
    await awaitable


@contextmanager
def _exported(names: tuple[str, ...], value: str) -> Iterator[None]:
    """Point the app's own settings (``DATABASE_URL``...) at the template while migrating."""
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, value))
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


class _RevisionLog(logging.Handler):
    """Remembers the last ``Running upgrade a -> b`` line alembic logged."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.revision: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Running upgrade"):
            self.revision = message.split("->")[-1].split(",")[0].strip()


@contextmanager
def _revision_log() -> Iterator[_RevisionLog]:
    logger = logging.getLogger("alembic.runtime.migration")
    handler = _RevisionLog()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _migration_failure(exc: BaseException, logged_revision: str | None) -> str:
    revision, path = _failing_revision(exc)
    revision = revision or logged_revision
    where = f"migration {revision}" if revision else "alembic upgrade head"
    if path:
        where += f" ({path})"
    return (
        f"{where} failed: {describe_error(exc)}. The half-built template was dropped; "
        "fix the migration and run again."
    )


def describe_error(exc: BaseException) -> str:
    """One line: the driver's own error and the statement, without SQLAlchemy's wrapping."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        cause = exc.orig.__cause__ or exc.orig if exc.orig is not None else exc
        statement = " ".join((exc.statement or "").split())
        return f"{type(cause).__name__}: {cause} (while running: {statement[:200]})"
    return f"{type(exc).__name__}: {exc}"


def _failing_revision(exc: BaseException) -> tuple[str | None, str | None]:
    """Find the migration module in the traceback: its globals hold ``revision``."""
    found: tuple[str | None, str | None] = (None, None)
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        module_globals = tb.tb_frame.f_globals
        if "revision" in module_globals and "down_revision" in module_globals:
            found = (str(module_globals["revision"]), tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return found
