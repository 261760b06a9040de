"""pytest-asyncio, in one place: which event loop a test runs in, and the engines bound to it.

pytest-asyncio 1.1+ runs each loop scope on a runner fixture (``_<scope>_scoped_runner``, a
private name: this module is the only one that knows it). An engine pool per loop scope lives as
long as that loop and closes its connections on it; function-scoped loops never overlap, so one
pool of engines serves them all (an engine's dialect is initialised once, not per test).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .engines import EnginePool, LoopRunner

LOOP_SCOPES = ("function", "class", "module", "package", "session")


def loop_scope(request: pytest.FixtureRequest) -> str | None:
    """The pytest-asyncio loop scope the test runs in; None for a test without one."""
    marker = request.node.get_closest_marker("asyncio")
    if marker is None:
        return None
    scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    if scope is None:
        try:
            scope = request.config.getini("asyncio_default_test_loop_scope")
        except ValueError:
            scope = "function"
    return str(scope) if scope in LOOP_SCOPES else "function"


def runner(request: pytest.FixtureRequest) -> LoopRunner | None:
    """The runner of the test's loop, or None (no pytest-asyncio, or a test that is not async)."""
    scope = loop_scope(request)
    if scope is None:
        return None
    try:
        found: LoopRunner = request.getfixturevalue(f"_{scope}_scoped_runner")
    except pytest.FixtureLookupError:
        return None
    return found


def engine_pool(request: pytest.FixtureRequest) -> EnginePool:
    """The async engines for the test's loop; for a test without one, unbound (NullPool)."""
    scope = loop_scope(request)
    if scope is not None:
        try:
            pool: EnginePool = request.getfixturevalue(f"_pgtemplate_engines_{scope}")
            return pool
        except pytest.FixtureLookupError:
            pass
    unbound: EnginePool = request.getfixturevalue("_pgtemplate_unbound_engines")
    return unbound


@pytest.fixture(scope="session")
def _pgtemplate_unbound_engines() -> EnginePool:
    """Every connection is closed when it is returned: nothing outlives a loop."""
    from .engines import EnginePool

    return EnginePool()


@pytest.fixture(scope="session")
def _pgtemplate_function_loop_engines() -> EnginePool:
    from .engines import EnginePool

    return EnginePool()


def _engines_fixture(scope: str) -> object:
    @pytest.fixture(scope=scope, name=f"_pgtemplate_engines_{scope}")  # type: ignore[call-overload,untyped-decorator]
    def engines(request: pytest.FixtureRequest) -> Iterator[EnginePool]:
        from .engines import EnginePool

        loop: LoopRunner = request.getfixturevalue(f"_{scope}_scoped_runner")
        if scope == "function":
            shared: EnginePool = request.getfixturevalue("_pgtemplate_function_loop_engines")
            pool = shared.on_loop(loop)
        else:
            pool = EnginePool(loop)
        yield pool
        pool.close_connections()

    return engines


for _scope in LOOP_SCOPES:
    globals()[f"_pgtemplate_engines_{_scope}"] = _engines_fixture(_scope)
