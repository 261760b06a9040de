"""Record how long each test's phases and each fixture's setup took, one JSON file per process.

Written to ``$BENCH_TIMINGS_DIR/<worker>.json``; the xdist controller, which runs no test,
writes nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

_TESTS: list[dict[str, Any]] = []
_FIXTURES: list[dict[str, Any]] = []


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """Excludes the fixture's dependencies: pytest sets those up before this hook."""
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        seconds = time.perf_counter() - started
        _FIXTURES.append({"name": fixturedef.argname, "scope": fixturedef.scope, "s": seconds})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _TESTS.append(
        {"id": report.nodeid, "when": report.when, "s": report.duration, "outcome": report.outcome}
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    directory = os.environ.get("BENCH_TIMINGS_DIR")
    if not directory or _is_controller(session.config):
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    data = {"worker": worker, "tests": _TESTS, "fixtures": _FIXTURES}
    (Path(directory) / f"{worker}.json").write_text(json.dumps(data))


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", 0))
