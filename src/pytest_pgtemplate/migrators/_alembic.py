"""``alembic upgrade heads`` in-process, against the template database, then checked."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MigrationError
from ..urls import with_driver
from ._base import Verified, exported, heads_match
from ._failures import (
    anyio_message,
    connection_message,
    elsewhere_message,
    is_connection_problem,
    is_setup_problem,
    migration_message,
    needs_anyio_thread,
    setup_message,
)
from ._inspect import inspect_database
from ._scripts import AlembicScripts

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import URL

_POSTGRES_BACKENDS = ("postgresql", "postgres")
_ASYNC_ENV = re.compile(r"async_engine_from_config|create_async_engine|AsyncEngine|asyncio")


@dataclass
class AlembicMigrator:
    """The project's own alembic migrations; ``alembic`` is imported only to build."""

    ini_path: Path
    export_env: tuple[str, ...] = ()
    scripts: AlembicScripts = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ini_path = Path(os.path.abspath(self.ini_path))
        self.scripts = AlembicScripts(self.ini_path)

    def describe(self) -> str:
        return f"alembic ({self.ini_path.name})"

    def fingerprint_parts(self) -> list[tuple[str, bytes]]:
        return self.scripts.fingerprint_parts()

    def fingerprint_note(self) -> str:
        files = len(self.scripts.fingerprint_parts()) - 1
        return f"fingerprint: {self.ini_path.name} + {files} file(s) under {self._scripts_root()}"

    def expected_heads(self) -> tuple[str, ...] | None:
        return self.scripts.heads()

    def heads_match(self, recorded: str) -> bool:
        return heads_match(self.expected_heads(), recorded, required=True)

    def migrate(self, url: URL) -> None:
        from alembic import command

        self._check_env_py()
        config = self.alembic_config(url)
        with exported(self.export_env, with_driver(url, "asyncpg")), _revision_log() as log:
            try:
                command.upgrade(config, "heads")
            except BaseException as exc:
                raise MigrationError(self._failure(exc, log.revision)) from exc

    def verify(self, url: URL) -> Verified:
        """The template must hold the script directory's head(s), as alembic computes them."""
        heads = self.authoritative_heads()
        contents = inspect_database(url)
        if contents.revisions != heads:
            raise MigrationError(
                elsewhere_message(
                    str(url.database),
                    contents.revisions,
                    heads,
                    self.scripts.env_variables_read(),
                )
            )
        return contents.verified()

    def authoritative_heads(self) -> tuple[str, ...]:
        """alembic's own ScriptDirectory (imports alembic and the revision files)."""
        from alembic.script import ScriptDirectory

        listed = self.scripts.paths("version_locations")
        recursive = self.scripts.option("recursive_version_locations").lower()
        script = ScriptDirectory(
            str(self.scripts.script_directory()),
            version_locations=[str(p) for p in listed] or None,
            recursive_version_locations=recursive in ("true", "1", "yes"),
        )
        return tuple(sorted(script.get_heads()))

    def alembic_config(self, url: URL) -> Config:
        """The user's ini with the template's URL and every path made absolute."""
        from alembic.config import Config

        config = Config(str(self.ini_path))
        options = {
            "sqlalchemy.url": self.url_for_env(url),
            "script_location": str(self.scripts.script_directory()),
        }
        lists = {name: self.scripts.paths(name) for name in ("version_locations",)}
        lists["prepend_sys_path"] = self.scripts.prepend_sys_path()
        if any(lists.values()):
            options["path_separator"] = "os"
            for name, paths in lists.items():
                if paths:
                    options[name] = os.pathsep.join(str(p) for p in paths)
        for name, value in options.items():
            config.set_main_option(name, value.replace("%", "%%"))
        return config

    def url_for_env(self, url: URL) -> str:
        """Keep the driver env.py was written for; a placeholder or non-PostgreSQL URL (alembic
        init's ``driver://``) gets asyncpg, or psycopg for an env.py with no async code."""
        configured = self.scripts.option("sqlalchemy.url")
        scheme = configured.split("://", 1)[0] if "://" in configured else ""
        backend, _, driver = scheme.partition("+")
        if backend in _POSTGRES_BACKENDS:
            if driver:
                return with_driver(url, driver)
            return url.set(drivername="postgresql").render_as_string(hide_password=False)
        return with_driver(url, "asyncpg" if self._env_is_async() else "psycopg")

    def _env_is_async(self) -> bool:
        try:
            text = self.scripts.env_py().read_text(encoding="utf-8", errors="replace")
        except OSError:
            return True
        return _ASYNC_ENV.search(text) is not None

    def _check_env_py(self) -> None:
        env_py = self.scripts.env_py()
        if not env_py.is_file():
            raise MigrationError(
                f"alembic could not run: there is no env.py in {env_py.parent} (script_location "
                f"of {self.ini_path}). This is a configuration problem, not a failing migration: "
                "point script_location at the directory that holds env.py, or create one with "
                "`alembic init -t async <dir>`."
            )

    def _failure(self, exc: BaseException, logged_revision: str | None) -> str:
        if needs_anyio_thread(exc):
            return anyio_message(exc, str(self.scripts.env_py()))
        if is_connection_problem(exc):
            return connection_message(exc)
        if is_setup_problem(exc):
            from sqlalchemy.engine import URL

            configured = self.url_for_env(URL.create("postgresql")).split("://")[0]
            driver = configured.partition("+")[2]
            return setup_message(exc, driver, str(self.ini_path))
        return migration_message(exc, logged_revision)

    def _scripts_root(self) -> Path:
        return self.scripts.script_directory()


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
