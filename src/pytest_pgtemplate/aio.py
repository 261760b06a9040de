"""An event loop on a daemon thread for the plugin's own database work.

pytest hooks and fixtures are synchronous and may run while a test's event loop exists (or
even runs); driving asyncpg on a private loop keeps the plugin independent of whichever loop,
scope or runner the user's tests choose.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """Runs coroutines to completion on one long-lived loop in a background thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the background loop and return its result (or raise its error)."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_started()).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` in the background; the caller collects the result later."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_started())

    def close(self) -> None:
        """Stop the loop and join its thread; idempotent."""
        with self._guard:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="pgtemplate-loop", daemon=True
                )
                self._thread.start()
            return self._loop


_PROCESS_LOOP = BackgroundLoop()


def process_loop() -> BackgroundLoop:
    """The one loop a process's plugin objects share: a ``Server`` a conftest makes with
    ``Server.connect`` and the plugin's own work must not drive one connection from two loops."""
    return _PROCESS_LOOP
