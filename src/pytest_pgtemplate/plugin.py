"""pytest hooks: options, configuration, report lines, xdist wiring. Inert until a fixture asks."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import pytest

from . import fixtures, sync_fixtures
from .errors import ConfigurationError, PgTemplateError, PgTemplateWarning
from .naming import new_run_id, run_id_from_testrun_uid
from .provision import Provisioner, RunIdentity
from .report import Report, summary_lines
from .server.local import describe as describe_local
from .server.local import start_now, stop_owned
from .settings import OPTIONS, Option, resolve
from .stash import CRASHED, PROVISIONER, USED_DATABASE, WORKER_REPORTS
from .urls import parse_server_url

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
                option.cli, dest=option.dest, action="store_true", default=None, help=text
            )
        else:
            group.addoption(
                option.cli, dest=option.dest, default=None, metavar=option.name.upper(), help=text
            )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)

    def lookup(option: Option) -> tuple[str | bool | None, str | None]:
        return config.getoption(option.dest), config.getini(option.ini)

    try:
        settings = resolve(lookup, os.environ, config.rootpath)
        if settings.url.value:
            parse_server_url(settings.url.value)
    except ConfigurationError as exc:
        raise pytest.UsageError(f"pytest-pgtemplate: {exc}") from None
    workerinput: dict[str, Any] = getattr(config, "workerinput", None) or {}
    identity = RunIdentity(
        run_id=workerinput.get("pgtemplate_run_id") or new_run_id(),
        worker_id=workerinput.get("workerid", "main"),
        owner_pid=workerinput.get("pgtemplate_owner_pid") or os.getpid(),
        server_url=workerinput.get("pgtemplate_server_url"),
    )
    provisioner = Provisioner(settings, identity, config.rootpath)
    config.stash[PROVISIONER] = provisioner
    config.stash[WORKER_REPORTS] = []
    config.pluginmanager.register(fixtures, "pgtemplate-fixtures")
    config.pluginmanager.register(sync_fixtures, "pgtemplate-sync-fixtures")
    if not workerinput and settings.export_env and not settings.url.value:
        _start_local_server_now(provisioner)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(provisioner), "pgtemplate-xdist")
    if not _is_xdist_controller(config):
        _export_env(provisioner)


def _start_local_server_now(provisioner: Provisioner) -> None:
    """Exported URLs must exist before test modules import: no lazy start for them."""
    try:
        server = start_now(provisioner.local_server())
    except PgTemplateError as exc:
        raise pytest.UsageError(f"pytest-pgtemplate: {exc}") from None
    provisioner.identity = replace(provisioner.identity, server_url=server.url)
    provisioner.report.server = describe_local(server, started_here=True)
    provisioner.report.server_started = True


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", 0))


def _export_env(provisioner: Provisioner) -> None:
    """Before test modules are imported, so settings read at import time see the worker's URL."""
    names = provisioner.settings.export_env
    if names and provisioner.has_server_url():
        url = provisioner.worker_urls(provisioner.server_url()).url
        os.environ.update(dict.fromkeys(names, url))


class XdistHooks:
    """Registered only when pytest-xdist is installed: hands the run id to every worker."""

    def __init__(self, provisioner: Provisioner) -> None:
        self.provisioner = provisioner
        self.run_id_set = False

    def pytest_configure_node(self, node: Any) -> None:
        identity = self.provisioner.identity
        if not self.run_id_set:  # the controller's crash sweep looks for the workers' run id
            uid, given = node.workerinput.get("testrunuid"), node.config.getoption("testrunuid")
            run_id = run_id_from_testrun_uid(uid, given=given) or identity.run_id
            identity = self.provisioner.identity = replace(identity, run_id=run_id)
            self.run_id_set = True
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
    provisioner = item.config.stash[PROVISIONER]
    database = item.stash.get(USED_DATABASE, None)
    if report.failed and call.when == "call" and database and provisioner.settings.keep_failed:
        try:
            line = f"database kept for inspection: psql {database.keep_copy()}"
        except PgTemplateError as exc:
            line = f"warning: could not keep a copy of the database: {exc}"
        report.sections.append(("pgtemplate", line))
    return report


def pytest_report_header(config: pytest.Config) -> str:
    provisioner = config.stash[PROVISIONER]
    settings = provisioner.settings
    sources = settings.sources
    if settings.url.value:
        server = f"{provisioner.server_url().render_as_string()} ({sources['url'].source})"
    elif provisioner.identity.server_url:
        server = provisioner.report.server
    else:
        server = "embedded, started on first use (no pgtemplate_url)"
    return (
        f"pgtemplate: server {server}, schema from {_schema_source(provisioner)}, "
        f"reset {settings.reset} ({sources['reset'].source}), project {settings.project}"
    )


def _schema_source(provisioner: Provisioner) -> str:
    """Only the source in use; what its fingerprint covers when that is not obvious."""
    try:
        migrator = provisioner.migrator()
        if provisioner.settings.migrate:
            return f"{migrator.describe()} ({migrator.fingerprint_note()})"
        return migrator.describe()
    except PgTemplateError as exc:
        return f"(not usable: {exc})"


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if config.stash.get(CRASHED, False):
        try:
            config.stash[PROVISIONER].sweep_after_crash()
        except PgTemplateError as exc:
            warnings.warn(PgTemplateWarning(f"could not sweep after a crash: {exc}"), stacklevel=1)
    workeroutput = getattr(config, "workeroutput", None)
    report = config.stash[PROVISIONER].report
    if workeroutput is not None and report.worth_reporting:
        workeroutput["pgtemplate"] = report.to_wire()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reports = config.stash[WORKER_REPORTS].copy()
    own = config.stash[PROVISIONER].report
    if own.worth_reporting:
        reports.append(own)
    owner_note = own.server if own.server_started else ""
    for line in summary_lines(reports, owner_note):
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    provisioner = config.stash.get(PROVISIONER, None)
    if provisioner is None:
        return
    try:
        provisioner.close()
    except PgTemplateError as exc:
        sys.stderr.write(f"pytest-pgtemplate: cleaning up at the end of the run: {exc}\n")
    finally:
        if provisioner.identity.owner_pid == os.getpid() and not provisioner.settings.url.value:
            stop_owned(provisioner.local_server())
