"""pytest hooks: options, configuration, report lines, xdist wiring. Inert until a fixture asks."""

from __future__ import annotations

import os
from typing import Any

import pytest

from . import fixtures
from ._errors import ConfigurationError
from ._naming import new_run_id
from ._provision import Provisioner, RunIdentity
from ._settings import OPTIONS, Option, resolve
from ._urls import parse_server_url

PROVISIONER = pytest.StashKey[Provisioner]()
_WORKER_REPORTS = pytest.StashKey[list[dict[str, Any]]]()
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
        group.addoption(
            option.cli,
            dest=option.dest,
            default=None,
            metavar=option.name.upper(),
            help=f"{option.help}{default}{env} Overrides ini {option.ini}.",
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)

    def lookup(option: Option) -> tuple[str | None, str | None]:
        return config.getoption(option.dest), config.getini(option.ini)

    try:
        settings = resolve(lookup, os.environ, config.rootpath)
        if settings.url.value:
            parse_server_url(settings.url.value)
    except ConfigurationError as exc:
        raise pytest.UsageError(f"pytest-pgtemplate: {exc}") from None
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    identity = RunIdentity(
        run_id=(workerinput or {}).get("pgtemplate_run_id") or new_run_id(),
        worker_id=(workerinput or {}).get("workerid", "main"),
    )
    provisioner = Provisioner(settings, identity, config.rootpath)
    config.stash[PROVISIONER] = provisioner
    config.stash[_WORKER_REPORTS] = []
    config.pluginmanager.register(fixtures, "pgtemplate-fixtures")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(identity.run_id), "pgtemplate-xdist")
    if not _is_xdist_controller(config):
        _export_env(provisioner)


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", 0))


def _export_env(provisioner: Provisioner) -> None:
    """Before test modules are imported, so settings read at import time see the worker's URL."""
    names = provisioner.settings.export_env
    if names and provisioner.settings.url.value:
        url = provisioner.worker_urls(provisioner.server_url()).url
        os.environ.update(dict.fromkeys(names, url))


class XdistHooks:
    """Registered only when pytest-xdist is installed: hands the run id to every worker."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["pgtemplate_run_id"] = self.run_id

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        report = getattr(node, "workeroutput", {}).get("pgtemplate")
        if report:
            node.config.stash[_WORKER_REPORTS].append(report)


def pytest_report_header(config: pytest.Config) -> str:
    settings = config.stash[PROVISIONER].settings
    sources = settings.sources
    server = settings.url.value or "not set"
    if settings.url.value:
        server = config.stash[PROVISIONER].server_url().render_as_string()
    schema = settings.migrate or str(settings.alembic_ini)
    return (
        f"pgtemplate: server {server} ({sources['url'].source}), "
        f"schema from {schema}, reset {settings.reset} ({sources['reset'].source})"
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    report = session.config.stash[PROVISIONER].report
    if workeroutput is not None and report.template:
        workeroutput["pgtemplate"] = {**report.as_dict(), "worker": _worker_id(session.config)}


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reports = config.stash[_WORKER_REPORTS].copy()
    own = config.stash[PROVISIONER].report
    if own.template:
        reports.append({**own.as_dict(), "worker": _worker_id(config)})
    if reports:
        terminalreporter.write_line(_summary(reports))


def pytest_unconfigure(config: pytest.Config) -> None:
    provisioner = config.stash.get(PROVISIONER, None)
    if provisioner is not None:
        provisioner.close()


def _worker_id(config: pytest.Config) -> str:
    return config.stash[PROVISIONER].identity.worker_id


def _summary(reports: list[dict[str, Any]]) -> str:
    builders = [r for r in reports if r["built"]]
    template = reports[0]["template"]
    if builders:
        built = ", ".join(f"{r['worker']} in {r['build_seconds']:.2f} s" for r in builders)
        how = f"built by {built}"
    else:
        how = "reused (no migration ran)"
    clones = sum(r["clones"] for r in reports)
    clone_ms = 1000 * sum(r["clone_seconds"] for r in reports) / max(clones, 1)
    resets = sum(r["resets"] for r in reports)
    return (
        f"pgtemplate: {reports[0]['server']}; template {template} {how}; "
        f"{clones} worker database(s) cloned (avg {clone_ms:.0f} ms) and dropped; "
        f"{resets} reset(s)"
    )
