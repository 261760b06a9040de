"""Whether anything that could write to the worker database ran since the last reset.

The check before a test exists for what ran between two tests: a test that did not ask for the
database, a fixture's setup or finalizer. When a test follows the reset of another with none of
that in between, the check would read back what the reset has just made, so it is skipped, and a
test pays one round trip instead of two. Only what pytest runs is seen: a thread or a process
that writes on its own is caught by the check after the test it writes into, as before.
"""

from __future__ import annotations

from typing import Any

import pytest

# Fixtures known not to write to a database: the plugin's own (a conftest override of one of
# them has another module), pytest's public builtins (tmp_path, monkeypatch, caplog...; not its
# private ones, which run a suite's own code: setup_method/teardown_method, setUpClass...),
# pytest-asyncio's event loops.
_QUIET_ASYNCIO = {"event_loop_policy"} | {
    f"_{scope}_scoped_runner" for scope in ("function", "class", "module", "package", "session")
}


class Activity:
    """A pytest plugin counting tests run and fixtures set up or finalized."""

    def __init__(self) -> None:
        self.count = 0
        self._marked: tuple[object, int] | None = None

    def mark(self, database: object) -> None:
        """Right after a reset that left ``database`` in the template's state."""
        self._marked = (database, self.count)

    def forget(self) -> None:
        """No database is known to be in the template's state (``truncate-all``, a failure)."""
        self._marked = None

    def quiet_since_reset(self, database: object) -> bool:
        """Nothing ran since ``database`` was last marked."""
        return self._marked is not None and self._marked == (database, self.count)

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any]) -> None:
        if not _quiet(fixturedef):
            self.count += 1

    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef[Any]) -> None:
        if not _quiet(fixturedef):
            self.count += 1

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self) -> None:
        self.count += 1


def _quiet(fixturedef: pytest.FixtureDef[Any]) -> bool:
    module = getattr(fixturedef.func, "__module__", None) or ""
    if module.startswith("pytest_pgtemplate."):
        return True
    if module.startswith("_pytest."):
        return not fixturedef.argname.startswith("_")
    return module.startswith("pytest_asyncio") and fixturedef.argname in _QUIET_ASYNCIO
