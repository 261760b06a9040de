"""Messages for a failed or untrustworthy build: each says what happened and what to change."""

from __future__ import annotations

import types

from ._base import describe_error, exception_chain

_DRIVERS = {"asyncpg", "psycopg", "psycopg2", "pg8000", "psycopg_pool"}


def is_setup_problem(exc: BaseException) -> bool:
    """An import or configuration problem: nothing is wrong with the migrations themselves."""
    from alembic.util import CommandError
    from sqlalchemy.exc import ArgumentError, MissingGreenlet, NoSuchModuleError

    setup = (
        ImportError,
        CommandError,
        NoSuchModuleError,
        ArgumentError,
        FileNotFoundError,
        MissingGreenlet,
    )
    return any(
        isinstance(link, setup) or "requires an async driver" in str(link)
        for link in exception_chain(exc)
    )


_REFUSED_LOGINS = {
    "InvalidCatalogNameError",
    "InvalidPasswordError",
    "InvalidAuthorizationSpecificationError",
    "CannotConnectNowError",
}


def is_connection_problem(exc: BaseException) -> bool:
    """env.py could not reach or log into a server: the migrations never ran."""
    for link in exception_chain(exc):
        if isinstance(link, ConnectionError | TimeoutError) or type(link).__name__ in (
            _REFUSED_LOGINS
        ):
            return True
        if type(link).__name__ == "OperationalError" and "connect" in str(link).lower():
            return True  # psycopg's "connection failed", SQLAlchemy's wrapper of it
        if isinstance(link, OSError) and "connect call failed" in str(link).lower():
            return True  # asyncpg's refused connection to every address of a host
    return False


def connection_message(exc: BaseException) -> str:
    return (
        f"alembic could not connect: {describe_error(exc)}. The plugin gives env.py the "
        "template's URL in sqlalchemy.url; if the error names another host, port or database, "
        "env.py connects with a URL of its own (your app's settings or an environment variable "
        "such as DATABASE_URL). Fix: set pgtemplate_export_env = DATABASE_URL (the plugin sets "
        "it before conftest files are imported and points it at the template while migrating), "
        "or make env.py connect with config.get_main_option('sqlalchemy.url'). This is a "
        "configuration problem, not a failing migration: nothing was migrated, and the "
        "half-built template was dropped."
    )


def needs_anyio_thread(exc: BaseException) -> bool:
    """anyio.from_thread.* called outside an AnyIO worker thread (``NoEventLoopError``)."""
    return any(
        type(link).__name__ == "NoEventLoopError" or "AnyIO worker thread" in str(link)
        for link in exception_chain(exc)
    )


def anyio_message(exc: BaseException, env_py: str) -> str:
    return (
        f"alembic upgrade failed: {describe_error(exc)}. Your {env_py} (or code it calls) uses "
        "anyio.from_thread, which only works inside an AnyIO worker thread; the plugin runs "
        "alembic on a plain thread with no event loop, as `alembic upgrade` does. Either make "
        "env.py run its migrations with asyncio.run() / a sync engine, or build the template "
        "with your own function: pgtemplate_migrate = 'package.module:function' (called with "
        "the template's URL, sync or async), e.g. one that runs "
        "anyio.run(anyio.to_thread.run_sync, <your upgrade>). Nothing was migrated wrongly: "
        "this is a configuration problem, not a failing migration."
    )


def setup_message(exc: BaseException, configured_driver: str, ini: str) -> str:
    """Import/configuration problem: name the missing piece and its fix."""
    missing = _missing_module(exc)
    revision, path = failing_revision(exc)
    where = f" (in migration {revision}, {path})" if revision else ""
    head = (
        f"alembic could not run{where}: {describe_error(exc)}. This is an import or "
        "configuration problem, not a failing migration; the half-built template was dropped."
    )
    if missing in _DRIVERS or missing.startswith(("psycopg", "asyncpg")):
        return (
            f"{head} The database driver {missing!r} is not installed: env.py got a "
            f"postgresql+{configured_driver or missing}:// URL because of sqlalchemy.url in "
            f"{ini}. Install it (pip install {missing}) or put the driver your env.py uses "
            "into sqlalchemy.url (e.g. postgresql+asyncpg://...); a URL without a PostgreSQL "
            "driver gets +asyncpg."
        )
    if missing:
        return (
            f"{head} Install {missing!r}, or make it importable: alembic's prepend_sys_path "
            f"in {ini} (relative to the ini's directory) puts your project on sys.path."
        )
    return f"{head} Check script_location, env.py and the [alembic] section of {ini}."


def migration_message(exc: BaseException, logged_revision: str | None) -> str:
    revision, path = failing_revision(exc)
    revision = revision or logged_revision
    where = f"migration {revision}" if revision else "alembic upgrade head"
    if path:
        where += f" ({path})"
    return (
        f"{where} failed: {describe_error(exc)}. The half-built template was dropped; "
        "fix the migration and run again."
    )


def elsewhere_message(
    template: str, found: tuple[str, ...] | None, heads: tuple[str, ...], env_vars: list[str]
) -> str:
    """The migrations reported success, but the template does not hold their head."""
    holds = (
        "has no alembic version table"
        if found is None
        else f"holds alembic revision(s) {', '.join(found) or '(none)'}"
    )
    export = " ".join(env_vars) if env_vars else "DATABASE_URL"
    read = (
        f" (your env.py reads {', '.join(env_vars)})"
        if env_vars
        else ", e.g. reads an environment variable such as DATABASE_URL"
    )
    return (
        f"alembic upgrade finished, but the template {template} {holds} instead of the head "
        f"{', '.join(heads) or '(none)'} of the script directory: the migrations ran somewhere "
        f"else, maybe in another database. Likely cause: env.py ignores sqlalchemy.url{read}. "
        f"Fix: set pgtemplate_export_env = {export} (the plugin points it at the template while "
        "migrating), or make env.py connect with config.get_main_option('sqlalchemy.url'). "
        "The template was dropped, not trusted."
    )


def empty_message(template: str, what: str) -> str:
    return (
        f"{what} finished, but the template {template} is empty (no table, view, function, "
        "type, schema or extension): it probably built the schema in another database (the "
        "application's own settings, e.g. DATABASE_URL, instead of the URL it was given). Fix: "
        "use the URL the plugin passes, or set pgtemplate_export_env = DATABASE_URL. The "
        "template was dropped, not trusted."
    )


def failing_revision(exc: BaseException) -> tuple[str | None, str | None]:
    """Find the migration module in the traceback: its globals hold ``revision``."""
    found: tuple[str | None, str | None] = (None, None)
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        module_globals = tb.tb_frame.f_globals
        if "revision" in module_globals and "down_revision" in module_globals:
            found = (str(module_globals["revision"]), tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return found


def _missing_module(exc: BaseException) -> str:
    for link in exception_chain(exc):
        if isinstance(link, ModuleNotFoundError) and link.name:
            return link.name.split(".", 1)[0]
    return ""
