"""The public fixtures, pytest-django style: a chain of small links, each overridable in a
conftest, each taking what it needs from the fixture before it (server -> template -> worker
database -> per-test database -> engine -> session); the work is in the objects they return."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _pytest.outcomes import Failed  # pytest.fail.Exception, as a class mypy can see

from . import loops
from .errors import PgTemplateError, PgTemplateWarning
from .report import Problem
from .settings import RESET_STRATEGIES, choice_error, strategy_name
from .stash import ACTIVITY, RUN, USED_DATABASE
from .urls import export_env

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from .activity import Activity
    from .engines import Database, EnginePool
    from .reset.resetter import ResetOutcome
    from .run import Run
    from .server.connection import Server
    from .template import TemplateInfo
    from .worker import WorkerDatabase

# SQLAlchemy, asyncpg and the engine room are imported inside the fixtures: loading the plugin
# must cost a suite nothing until a test asks for a database.


@contextmanager
def _user_errors() -> Iterator[None]:
    """A setup problem is one clear line, not a traceback from inside a driver."""
    try:
        yield
    except PgTemplateError as exc:
        raise SetupFailed(f"pytest-pgtemplate: {exc}", pytrace=False) from None


class SetupFailed(Failed):
    """A session fixture's failure: pytest hands it to every test that needs the fixture, and
    the report shows it in full once (``plugin.pytest_runtest_makereport``)."""


def _run(request: pytest.FixtureRequest) -> Run:
    return request.config.stash[RUN]


def _lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by every worker of the run: xdist's recipe for work done once."""
    return tmp_path_factory.getbasetemp().parent


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """The PostgreSQL server in use (``.url``, ``.version``, ``.major``...) and this process's
    claim on it; a conftest may return its own ``Server.connect(url)`` instead."""
    with _user_errors():
        return _run(request).open_server(_lock_dir(tmp_path_factory))


@pytest.fixture(scope="session")
def pg_template(
    request: pytest.FixtureRequest, pg_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> TemplateInfo:
    """The migrated template: ``.name``, ``.fingerprint``, ``.reused``."""
    from .template import template_for

    run = _run(request)
    with _user_errors():
        server = run.adopt(pg_server)
        template = template_for(
            server, run.migrator(), run.build_options(_lock_dir(tmp_path_factory))
        )
    if len(template.heads) > 1:
        warnings.warn(
            PgTemplateWarning(
                f"the migrations have {len(template.heads)} heads ({', '.join(template.heads)}): "
                "the template holds them all, but a deploy's `alembic upgrade head` fails. "
                "Merge them: alembic merge heads -m merge"
            ),
            stacklevel=1,
        )
    return template


@pytest.fixture(scope="session")
def pg_worker_database(
    request: pytest.FixtureRequest, pg_server: Server, pg_template: TemplateInfo
) -> Iterator[WorkerDatabase]:
    """This worker's database, cloned from the template and dropped at the end of the run."""
    from .worker import clone_worker

    run = _run(request)
    with _user_errors():
        server = run.adopt(pg_server)
        database = clone_worker(
            server, pg_template, name=run.worker_name(), project=run.settings.project
        )
    export_env(run.settings.export_env, database.url)  # a conftest server is known only now
    yield database
    try:
        database.drop()
    except PgTemplateError as exc:
        server.report.record(Problem(str(exc)))


@pytest.fixture
def pg_database(
    request: pytest.FixtureRequest, pg_worker_database: WorkerDatabase
) -> Iterator[WorkerDatabase]:
    """The worker database in the template's state when the test starts; reset after it."""
    strategy = reset_strategy(request)
    test = request.node.nodeid
    activity = _activity(request.config)
    quiet = activity.quiet_since_reset(pg_worker_database)
    activity.forget()
    with _user_errors():
        before = pg_worker_database.ensure_clean(nothing_ran=quiet)
    _warn_about(before, f"before {test}, an earlier test", pg_worker_database)
    request.node.stash[USED_DATABASE] = pg_worker_database
    yield pg_worker_database
    with _user_errors():
        pg_worker_database.clean_connections()
        after = pg_worker_database.reset(strategy)
    if strategy != "truncate-all":  # its seed rows come back at the check before the next test
        activity.mark(pg_worker_database)
    _warn_about(after, test, pg_worker_database)


def _activity(config: pytest.Config) -> Activity:
    """Counting starts with the first test that asks for a database: none before is skipped."""
    from .activity import Activity

    if ACTIVITY not in config.stash:
        config.stash[ACTIVITY] = Activity()
        config.pluginmanager.register(config.stash[ACTIVITY], "pgtemplate-activity")
    return config.stash[ACTIVITY]


@pytest.fixture
def pg_empty_database(
    request: pytest.FixtureRequest, pg_server: Server
) -> Iterator[WorkerDatabase]:
    """An empty database (from template0, no migrations) for one test, e.g. a migration test."""
    from .worker import empty_database

    run = _run(request)
    with _user_errors():
        server = run.adopt(pg_server)
        database = empty_database(
            server, owner=run.worker_name(), number=run.next_empty(), project=run.settings.project
        )
    yield database
    with _user_errors():
        database.drop()


@pytest.fixture(autouse=True)
def _pgtemplate_marker(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.pgtemplate`` means the test uses the database even without asking for it."""
    if request.node.get_closest_marker("pgtemplate") is not None:
        reset_strategy(request)  # a malformed marker stops the test before any database work
        request.getfixturevalue("pg_database")


@pytest.fixture
def pg_engine(request: pytest.FixtureRequest, pg_database: Database) -> AsyncEngine:
    """An AsyncEngine on ``pg_database``, bound to the event loop this test runs in."""
    return loops.engine_pool(request).async_engine(pg_database)


@pytest.fixture
def pg_session(request: pytest.FixtureRequest, pg_engine: AsyncEngine) -> Iterator[AsyncSession]:
    """An AsyncSession (``expire_on_commit=False``) on ``pg_engine``, closed after the test.

    Under ``reset="rollback"`` it joins an outer transaction through savepoints, so the test's
    ``commit()`` works and the outer rollback undoes everything.
    """
    from sqlalchemy.ext.asyncio import AsyncSession

    from . import sessions

    runner = loops.runner(request)
    if reset_strategy(request) == "rollback":
        if runner is None:
            pytest.fail(
                "pytest-pgtemplate: reset='rollback' needs the test to run on a pytest-asyncio "
                "event loop (install pytest-asyncio and make the test async)",
                pytrace=False,
            )
        context = sessions.async_rollback_session(pg_engine)
        yield runner.run(context.__aenter__())
        runner.run(context.__aexit__(None, None, None))
        return
    session = AsyncSession(pg_engine, expire_on_commit=False)
    yield session
    if runner is None or runner.get_loop().is_closed():
        session.sync_session.expunge_all()
    else:
        runner.run(session.close())


@pytest.fixture(scope="session")
def _pgtemplate_sync_engines() -> Iterator[EnginePool]:
    """Sync engines never touch an event loop: one pool serves the whole run."""
    from .engines import EnginePool

    pool = EnginePool(sync=True)
    yield pool
    pool.close_connections()


@pytest.fixture
def pg_sync_engine(request: pytest.FixtureRequest, pg_database: Database) -> Engine:
    """A SQLAlchemy ``Engine`` (``postgresql+psycopg://``) on ``pg_database``."""
    if importlib.util.find_spec("psycopg") is None:
        pytest.fail(
            "pytest-pgtemplate: pg_sync_engine and pg_sync_session need psycopg 3: "
            "pip install 'pytest-pgtemplate[psycopg]'",
            pytrace=False,
        )
    pool: EnginePool = request.getfixturevalue("_pgtemplate_sync_engines")
    return pool.sync_engine(pg_database)


@pytest.fixture
def pg_sync_session(request: pytest.FixtureRequest, pg_sync_engine: Engine) -> Iterator[Session]:
    """A ``Session`` (``expire_on_commit=False``) on ``pg_sync_engine``, closed after the test.

    Under ``reset="rollback"`` it joins an outer transaction through savepoints, like
    ``pg_session``.
    """
    from sqlalchemy.orm import Session

    from . import sessions

    if reset_strategy(request) == "rollback":
        with sessions.sync_rollback_session(pg_sync_engine) as session:
            yield session
        return
    with Session(pg_sync_engine, expire_on_commit=False) as session:
        yield session


def reset_strategy(request: pytest.FixtureRequest) -> str:
    """The marker takes exactly ``reset=<strategy>``, or nothing; anything else is an error."""
    marker = request.node.get_closest_marker("pgtemplate")
    if marker is None:
        return _run(request).settings.reset
    if not marker.args and not marker.kwargs:  # bare: the test uses the database, default reset
        return _run(request).settings.reset
    strategy = marker.kwargs.get("reset")
    if marker.args or set(marker.kwargs) != {"reset"}:
        given = ", ".join(
            [*map(repr, marker.args), *(f"{k}={v!r}" for k, v in marker.kwargs.items())]
        )
        pytest.fail(
            f"@pytest.mark.pgtemplate takes exactly reset=<strategy> (got ({given})); write e.g. "
            f'@pytest.mark.pgtemplate(reset="recreate"), strategy one of {list(RESET_STRATEGIES)}',
            pytrace=False,
        )
    strategy, deprecation = strategy_name(str(strategy))
    if deprecation:
        warnings.warn(PgTemplateWarning(f"@pytest.mark.pgtemplate: {deprecation}"), stacklevel=1)
    if strategy not in RESET_STRATEGIES:
        pytest.fail(f"@pytest.mark.pgtemplate: {choice_error('reset', strategy)}", pytrace=False)
    return strategy


def _warn_about(outcome: ResetOutcome, who: str, database: WorkerDatabase) -> None:
    for message in warnings_for(outcome, who, database.name):
        warnings.warn(PgTemplateWarning(message), stacklevel=1)


def warnings_for(outcome: ResetOutcome, who: str, name: str) -> list[str]:
    """What a reset repaired on the user's behalf, one line each, naming the fix."""
    lines = []
    if outcome.leaked:
        details = "; ".join(f"pid {b.pid} {b.state}: {b.query!r}" for b in outcome.leaked)
        lines.append(
            f"{who} left {len(outcome.leaked)} connection(s) inside a transaction on {name} "
            f"({details}). pytest-pgtemplate waited for them, then ended them to reset the "
            "database; close sessions and connections before the test ends (async with "
            "AsyncSession(...), with Session(...)), and give a session that outlives a test "
            "(session-scoped) a commit or rollback at the end of each test."
        )
    if outcome.prepared:
        lines.append(
            f"{who} left prepared transaction(s) {', '.join(outcome.prepared)} on {name}; "
            "pytest-pgtemplate rolled them back. COMMIT PREPARED or ROLLBACK PREPARED them in "
            "the test."
        )
    if outcome.schema_changed:
        ran = "; ".join(outcome.schema[:3]) + ("; ..." if len(outcome.schema) > 3 else "")
        lines.append(
            f"{who} changed the schema of {name} ({ran}), which a row-level reset cannot undo; "
            "the database was re-cloned from the template. Mark such tests "
            '@pytest.mark.pgtemplate(reset="recreate").'
        )
    if outcome.databases:
        lines.append(
            f"database(s) {', '.join(outcome.databases)} appeared on the plugin's own server "
            f"while {who} ran (created by it, or by a test running at the same time on another "
            "worker) and are left there; drop them in the test or in a fixture's teardown."
        )
    return lines


async def async_worker_database(request: pytest.FixtureRequest) -> WorkerDatabase:
    """``pg_worker_database`` for async fixtures, without blocking their event loop.

    The first request may build the template and clone (seconds). Asked for synchronously from a
    session-scoped async fixture, that would freeze its loop: servers and health checks on it
    stop answering, and a migration that calls back into the loop would wait for ever. Awaited
    here, the work runs on a thread while the loop keeps serving.
    """
    import asyncio

    database: WorkerDatabase = await asyncio.to_thread(
        request.getfixturevalue, "pg_worker_database"
    )
    return database
