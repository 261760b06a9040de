"""The inner project's conftest.py: the template's state, connections, and what the run warned.

With ``REAL_SCHEMA_RUN=broken`` it also replaces ``pg_database`` by one whose reset forgets the
step between a pair's two tests (see :func:`pg_database`).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from yardstick import RUN, STRATEGY, Facets, session_state, snapshot

from pytest_pgtemplate import PgTemplateWarning, WorkerDatabase

_RECORD: dict[str, Any] = {"expected": {}, "got": {}}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "expect_warning(text, strategies): the reset after this test warns with this text",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # Under recreate the pair tests the recreate after its a test; a b test changes nothing
        # a restore would not undo, and re-cloning after it too would double the run's cost.
        if (
            STRATEGY == "recreate"
            and pair_step(item.name) == "b"
            and item.get_closest_marker("pgtemplate") is None
        ):
            item.add_marker(pytest.mark.pgtemplate(reset="restore"))
        marker = item.get_closest_marker("expect_warning")
        if marker is not None and STRATEGY in marker.kwargs["strategies"] and RUN != "broken":
            _RECORD["expected"][item.nodeid] = marker.args[0]


def pytest_warning_recorded(
    warning_message: warnings.WarningMessage, when: str, nodeid: str, location: object
) -> None:
    if issubclass(warning_message.category, PgTemplateWarning):
        _RECORD["got"].setdefault(nodeid, []).append(str(warning_message.message))


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.path.join(str(session.config.rootpath), "warnings.json")
    with open(path, "w") as out:
        json.dump(_RECORD, out, indent=1)


@pytest.fixture(scope="session", autouse=True)
async def pristine(pg_worker_database: WorkerDatabase) -> Facets:
    """The clone's state before any test ran: the template's (test_00 checks a few facts)."""
    return await snapshot(pg_worker_database.libpq_url)


@pytest.fixture(scope="session", autouse=True)
async def pristine_session(pg_worker_database: WorkerDatabase) -> dict[str, Any]:
    """What a new connection carries: every pooled connection must look like it again."""
    return await session_state(pg_worker_database.libpq_url)


@pytest.fixture
async def raw(pg_database: WorkerDatabase) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, outside every session: autocommit, committed at once."""
    conn = await asyncpg.connect(pg_database.libpq_url)
    yield conn
    await conn.close()


_STEP = re.compile(r"test_\d+_(a|b)_")


def pair_step(name: str) -> str | None:
    match = _STEP.match(name)
    return match[1] if match else None


if RUN == "broken":

    @pytest.fixture
    def pg_database(
        request: pytest.FixtureRequest, pg_worker_database: WorkerDatabase
    ) -> Iterator[WorkerDatabase]:
        """A broken reset: no reset after test_N_a, no check before test_N_b. Every pair still
        starts from the template's state (the plugin's own reset runs after test_N_b), so a b
        test can only fail because of its own a test's change, never an earlier pair's."""
        step = pair_step(request.node.name)
        if step != "b":
            pg_worker_database.ensure_clean()
        yield pg_worker_database
        if step != "a":
            marker = request.node.get_closest_marker("pgtemplate")
            pg_worker_database.reset(marker.kwargs["reset"] if marker else "restore")
