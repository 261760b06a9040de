"""SQLAlchemy engines and sessions for tests, bound to the event loop the test runs in.

asyncpg connections belong to the loop that opened them. An engine is therefore created per
pytest-asyncio loop (function, module, session...) and disposed on that same loop when the loop's
scope ends, so a session-scoped loop reuses pooled connections across tests and a function-scoped
loop never meets a connection from a dead loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

T = TypeVar("T")


class LoopRunner(Protocol):
    """What pytest-asyncio's scoped runners (``asyncio.Runner``) offer."""

    def run(self, coro: Coroutine[Any, Any, T]) -> T: ...

    def get_loop(self) -> asyncio.AbstractEventLoop: ...


@dataclass
class BoundEngine:
    """An engine plus the runner of the loop its connections live on (None: unbound, NullPool)."""

    engine: AsyncEngine
    runner: LoopRunner | None
    generation: int

    def run(self, coro: Coroutine[Any, Any, T]) -> T | None:
        """Run ``coro`` on the engine's loop when that loop is idle; otherwise drop it."""
        if self.runner is not None and not self.runner.get_loop().is_closed():
            return self.runner.run(coro)
        coro.close()
        return None

    def refresh(self, generation: int) -> None:
        """After the database was re-created, pooled connections point at a dropped database."""
        if generation != self.generation:
            self.engine.sync_engine.dispose(close=False)
            self.generation = generation

    def dispose(self) -> None:
        if self.run(self.engine.dispose()) is None:
            self.engine.sync_engine.dispose(close=False)


def pooled_engine(url: str, runner: LoopRunner | None, generation: int) -> BoundEngine:
    return BoundEngine(create_async_engine(url, pool_size=2, max_overflow=8), runner, generation)


def unbound_engine(url: str, generation: int) -> BoundEngine:
    """Loop-agnostic: every connection is closed when it is returned, nothing outlives a loop."""
    return BoundEngine(create_async_engine(url, poolclass=NullPool), None, generation)
