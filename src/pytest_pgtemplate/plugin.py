"""pytest hooks: options, configuration, report lines, xdist wiring. Inert until a fixture asks."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import pytest

from . import fixtures, loops
from .errors import ConfigurationError, PgTemplateError, PgTemplateWarning
from .identity import (
    RunIdentity,
    from_workerinput,
    is_worker,
    owner_identity,
    publish,
    worker_identity,
)
from .report import Report, ServerUsed, summary_lines
from .run import Run
from .settings import OPTIONS, OPTIONS_BY_NAME, Option, Settings, resolve, unknown_names
from .stash import CRASHED, RUN, SEEN_ERRORS, TESTRUN_UID, USED_DATABASE, WORKER_REPORTS
from .urls import check_url, export_env, redact

_MARKER_HELP = (
    "pgtemplate(reset=STRATEGY): the test uses its worker's database (as if it asked for "
    "pg_database) and resets it with STRATEGY afterwards"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgtemplate", "PostgreSQL template databases (pytest-pgtemplate)")
    for option in OPTIONS:
        env = f" Env: {option.env_var}." if option.env_var else ""
        default = f" Default: {option.default}." if option.default else ""
        parser.addini(option.ini, help=option.help + default, default=None)
        text = f"{option.help}{default}{env} Overrides ini {option.ini}."
        if option.flag:
            group.addoption(
                option.cli,
                dest=option.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{text} --no-{option.cli[2:]} turns it off, whatever ini and env say.",
            )
        else:
            group.addoption(
                option.cli, dest=option.dest, default=None, metavar=option.name.upper(), help=text
            )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """The initial conftest files are imported right after this hook, and a conftest that builds
    an engine at import time reads the variables of ``pgtemplate_export_env`` then."""
    namespace = early_config.known_args_namespace

    def lookup(option: Option) -> tuple[str | bool | None, str | None]:
        return getattr(namespace, option.dest, None), early_config.getini(option.ini)

    identity: RunIdentity | None = None
    if is_worker(os.environ):
        identity = worker_identity(os.environ)
        if identity is None:  # not provably its controller's: workerinput decides, at configure
            return
    _begin(early_config, namespace, lookup, identity)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)
    workerinput: dict[str, Any] = getattr(config, "workerinput", None) or {}
    told = from_workerinput(workerinput) if workerinput else None
    run = config.stash.get(RUN, None)
    if run is None:  # a remote worker, a nested run, or the plugin loaded late

        def lookup(option: Option) -> tuple[str | bool | None, str | None]:
            return config.getoption(option.dest), config.getini(option.ini)

        run = _begin(config, config.option, lookup, told)
    elif told is not None and told != run.identity:
        run.identity = told
        run.report.worker = told.worker_id
        _export_env(run)
    if not workerinput:  # once per run, not once per worker
        for note in [*run.settings.deprecations, *_unknown_settings(config, run.settings)]:
            config.issue_config_time_warning(PgTemplateWarning(note), stacklevel=2)
    uid = config.stash.get(TESTRUN_UID, None)
    if uid is not None:
        config.option.testrunuid = uid  # xdist gives it to every worker: testrun_uid ~ run id
    config.stash[WORKER_REPORTS] = []
    config.pluginmanager.register(fixtures, "pgtemplate-fixtures")
    config.pluginmanager.register(loops, "pgtemplate-loops")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(run), "pgtemplate-xdist")


def _begin(
    config: pytest.Config,
    namespace: object,
    lookup: Callable[[Option], tuple[str | bool | None, str | None]],
    identity: RunIdentity | None,
) -> Run:
    """Settings and identity; the owner starts its server now if URLs must be exported; every
    process but the xdist controller exports its worker database's URL."""
    settings = _settings(lookup, config)
    controller = bool(getattr(namespace, "numprocesses", 0)) and identity is None
    if identity is None:
        given = getattr(namespace, "testrunuid", None)
        identity, config.stash[TESTRUN_UID] = owner_identity(controller=controller, given_uid=given)
    run = Run(settings, identity, config.rootpath)
    config.stash[RUN] = run
    if identity.owner_pid == os.getpid():
        if settings.export_env and not settings.url.value and not _only_asks_for_help(namespace):
            _start_local_server_now(run)
        publish(run.identity, os.environ)
    if not controller:
        _export_env(run)
    return run


def _settings(
    lookup: Callable[[Option], tuple[str | bool | None, str | None]], config: pytest.Config
) -> Settings:
    try:
        settings = resolve(lookup, os.environ, config.rootpath)
        if settings.url.value:
            check_url(settings.url.value, _given_as(OPTIONS_BY_NAME["url"], settings.url.source))
    except ConfigurationError as exc:
        raise pytest.UsageError(f"pytest-pgtemplate: {exc}") from None
    return settings


def _given_as(option: Option, source: str) -> str:
    """How the user gave a value: its flag, its environment variable or its ini key."""
    return {"cli": option.cli, "ini": option.ini}.get(source, source.removeprefix("env "))


def _unknown_settings(config: pytest.Config, settings: Settings) -> list[str]:
    """Typos: ini keys no plugin registered and ``PGTEMPLATE_*`` variables that are not ours.

    pytest itself only says "Unknown config option" (after collection); this names the setting
    meant. The ini file is read again, as pytest read it: its parsed form is private.
    """
    from .cli.config import read

    keys: list[str] = []
    if config.inipath is not None:
        with contextlib.suppress(ConfigurationError):
            keys = list(read(config.inipath) or {})
    exported = {entry.partition("=")[0] for entry in settings.export_env}
    environ = [name for name in os.environ if name not in exported]
    ini_file = config.inipath.name if config.inipath else ""
    return unknown_names(keys, environ, lambda key: _registered(config, key), ini_file)


def _registered(config: pytest.Config, key: str) -> bool:
    try:
        config.getini(key)
    except ValueError:  # pytest's "unknown configuration value"
        return False
    return True


def _only_asks_for_help(namespace: object) -> bool:
    return bool(getattr(namespace, "help", False) or getattr(namespace, "version", False))


def _start_local_server_now(run: Run) -> None:
    """Exported URLs must exist before conftest files import: no lazy start for them."""
    from .server.per_run import describe, start_now

    try:
        server = start_now(run.own_server())
    except PgTemplateError as exc:
        raise pytest.UsageError(f"pytest-pgtemplate: {exc}") from None
    run.identity = replace(run.identity, server_url=server.url)
    run.report.record(ServerUsed(describe(server, started_here=True), started_here=True))


def _export_env(run: Run) -> None:
    """Before conftest files and test modules are imported, so import-time reads see the URL."""
    if run.settings.export_env and run.has_server_url():
        export_env(run.settings.export_env, run.worker_urls(run.server_url()).url)


class XdistHooks:
    """Registered only when pytest-xdist is installed: hands the run id to every worker."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def pytest_configure_node(self, node: Any) -> None:
        identity = self.run.identity
        node.workerinput["pgtemplate_run_id"] = identity.run_id
        node.workerinput["pgtemplate_owner_pid"] = identity.owner_pid
        node.workerinput["pgtemplate_server_url"] = identity.server_url

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        report = getattr(node, "workeroutput", {}).get("pgtemplate")
        if report:
            node.config.stash[WORKER_REPORTS].append(Report.from_wire(report))
        if error is not None:
            node.config.stash[CRASHED] = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """``--pgtemplate-keep-failed``: copy the failed test's database before the reset empties it."""
    report = yield
    _shorten_repeated_setup_error(item.config, call, report)
    run = item.config.stash[RUN]
    database = item.stash.get(USED_DATABASE, None)
    if report.failed and call.when == "call" and database and run.settings.keep_failed:
        try:
            line = f"database kept for inspection: {_psql(database.keep_copy(), run)}"
        except PgTemplateError as exc:
            line = f"warning: could not keep a copy of the database: {exc}"
        report.sections.append(("pgtemplate", line))
    return report


def _shorten_repeated_setup_error(
    config: pytest.Config, call: pytest.CallInfo[None], report: pytest.TestReport
) -> None:
    """An unreachable server is one error, not the same paragraph under each of 500 tests."""
    error = call.excinfo.value if call.excinfo is not None else None
    if not isinstance(error, fixtures.SetupFailed):
        return
    seen = config.stash.setdefault(SEEN_ERRORS, set())
    if id(error) in seen:
        first = str(error.msg).split(". ")[0]
        report.longrepr = f"{first}: as above, the same error for every test that needs it"
    seen.add(id(error))


def _psql(url: str, run: Run) -> str:
    """A command that reaches the kept copy, without printing a password."""
    plain = redact(url, mask="")
    if plain == url.strip():
        return f"psql {url}"
    password_file = run.own_password_file()
    if password_file is None:
        return f"psql {plain}  (the password is pgtemplate_url's)"
    return (
        f'PGPASSWORD="$(cat {password_file})" psql {plain}  (on the plugin\'s own server, which '
        "stops when this run ends: look before then, e.g. with --pdb, or set pgtemplate_url to a "
        "server of yours to keep copies)"
    )


def pytest_report_header(config: pytest.Config) -> str:
    run = config.stash[RUN]
    settings = run.settings
    sources = settings.sources
    if settings.url.value:
        server = f"{redact(settings.url.value)} ({sources['url'].source})"
    elif run.identity.server_url:
        server = _started_here(run.report) or "own"
    else:
        server = "own, started on first use (no pgtemplate_url)"
    return (
        f"pgtemplate: server {server}, schema {_schema_source(run)}, "
        f"reset {settings.reset} ({sources['reset'].source}), project {settings.project}"
    )


def _schema_source(run: Run) -> str:
    """Only the source in use; what its fingerprint covers when that is not obvious."""
    settings = run.settings
    ini = settings.alembic_ini
    if not (settings.migrate or settings.metadata) and ini is not None and not ini.exists():
        return (
            f"not configured (no {ini.name} in {ini.parent}: set pgtemplate_alembic_ini, "
            "pgtemplate_migrate or pgtemplate_metadata)"
        )
    try:
        migrator = run.migrator()
        if run.settings.migrate:
            return f"from {migrator.describe()} ({migrator.fingerprint_note()})"
        return f"from {migrator.describe()}"
    except PgTemplateError as exc:
        return f"not usable ({exc})"


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if config.stash.get(CRASHED, False):
        try:
            config.stash[RUN].sweep_after_crash()
        except PgTemplateError as exc:
            warnings.warn(PgTemplateWarning(f"could not sweep after a crash: {exc}"), stacklevel=1)
    workeroutput = getattr(config, "workeroutput", None)
    report = config.stash[RUN].report
    if workeroutput is not None and report.worth_reporting:
        workeroutput["pgtemplate"] = report.to_wire()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reports = config.stash[WORKER_REPORTS].copy()
    own = config.stash[RUN].report
    if own.worth_reporting:
        reports.append(own)
    for line in summary_lines(reports, _started_here(own)):
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(RUN, None)
    if run is None:
        return
    try:
        run.close()
    except PgTemplateError as exc:
        sys.stderr.write(f"pytest-pgtemplate: cleaning up at the end of the run: {exc}\n")
    finally:
        if run.identity.owner_pid == os.getpid() and not run.settings.url.value:
            _stop_own_server(run)


def _stop_own_server(run: Run) -> None:
    from .server.cache import cache_root, may_hold_server_of

    if may_hold_server_of(run.settings.cache_dir or cache_root(), run.identity.owner_pid):
        from .server.per_run import stop_owned

        stop_owned(run.own_server())


def _started_here(report: Report) -> str:
    """The owner's words for the own server it started (version, binaries, start-up time)."""
    return next((used.text for used in report.of(ServerUsed) if used.started_here), "")
