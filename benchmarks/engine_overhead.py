"""What ``pg_engine`` costs a test, per pytest-asyncio loop scope: median of many "tests".

    python benchmarks/engine_overhead.py [--rounds 50] [--url URL]

A "test" opens a connection from the engine and runs SELECT 1. ``session loop`` reuses the
pooled connection (what pg_engine does under a session-scoped loop); ``function loop, shared
engine`` is what pg_engine does under function-scoped loops (a fresh loop per test, one engine
whose pool is disposed on each loop); ``function loop, new engine`` is the naive alternative.

The second table is the clean of the idle pooled connections at a test's end, through the
plugin's own ``EnginePool`` on a session loop, per what the test did with the pool, against no
clean at all and against the clean as it was before (every idle connection, a ``DO`` block
for SQL-level prepared statements each time; rebuilt here, labelled as such). The clean changes
session state only: it runs on the URL's database as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pytest_pgtemplate import engines

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


async def one_query(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.scalar(text("SELECT 1"))


def new_engine_per_loop(url: str) -> Callable[[], None]:
    async def body() -> None:
        engine = create_async_engine(url)
        await one_query(engine)
        await engine.dispose()

    return lambda: asyncio.run(body())


def shared_engine_per_loop(url: str) -> Callable[[], None]:
    engine = create_async_engine(url)

    async def body() -> None:
        await one_query(engine)
        await engine.dispose()

    return lambda: asyncio.run(body())


def session_loop(url: str) -> Callable[[], None]:
    runner = asyncio.Runner()
    engine = create_async_engine(url)
    return lambda: runner.run(one_query(engine))


@dataclass
class _Database:
    """What ``EnginePool`` asks of ``pg_database``: its URLs, and the epoch each test starts."""

    url: str
    sync_url: str
    epoch: int = 0
    generation: int = 0


OLD_CLEAN = engines.CLEAN_SESSION.rsplit(";", 1)[0] + "; " + engines.DEALLOCATE_SQL
"""The clean before the count of SQL-level prepared statements gated the ``DO`` block."""


async def _clean_every_idle(engine: AsyncEngine) -> None:
    """The clean as it was: every idle connection checked out and cleaned."""
    pool = engine.sync_engine.pool
    held = [await engine.connect() for _ in range(pool.checkedin())]  # type: ignore[attr-defined]
    for connection in held:
        raw = await connection.get_raw_connection()
        await raw.driver_connection.execute(OLD_CLEAN)  # type: ignore[union-attr]
    for connection in held:
        await connection.close()


def clean_cases(url: str) -> dict[str, Callable[[], None]]:
    """A "test" of each kind, then its end: the plugin's clean, none, or the clean as it was."""
    runner = asyncio.Runner()
    cases: dict[str, Callable[[], None]] = {}

    def case(label: str, used: int, idle: int, prepare: bool = False) -> None:
        for clean in ("none", "plugin", "before"):
            cases[f"{label} | {clean}"] = one_case(
                runner, url, clean, used=used, idle=idle, prepare=prepare
            )

    case("used its one pooled connection", used=1, idle=1)
    case("used one of two idle connections", used=1, idle=2)
    case("used none of two idle connections", used=0, idle=2)
    case("used one, with a SQL-level PREPARE", used=1, idle=1, prepare=True)
    return cases


def one_case(
    runner: asyncio.Runner, url: str, clean: str, *, used: int, idle: int, prepare: bool
) -> Callable[[], None]:
    """A pool of its own: ``idle`` connections, cleaned once; each test uses ``used`` of them."""
    pool = engines.EnginePool(runner)
    database = _Database(url, url)
    if clean == "plugin":
        engine = pool.async_engine(database)
    else:  # a pool like the plugin's, without its checkout hook
        engine = create_async_engine(url, pool_size=2, max_overflow=8)

    async def warm() -> None:
        held = [await engine.connect() for _ in range(idle)]
        for connection in held:
            await connection.close()

    async def body() -> None:
        held = [await engine.connect() for _ in range(used)]
        for connection in held:
            await connection.execute(text("PREPARE mine AS SELECT 1" if prepare else "SELECT 1"))
        for connection in held:
            await connection.close()

    runner.run(warm())
    if clean == "plugin":
        pool.clean_idle(database)

    def test() -> None:
        database.epoch += 1
        runner.run(body())
        if clean == "plugin":
            pool.clean_idle(database)
        elif clean == "before":
            runner.run(_clean_every_idle(engine))
        elif prepare:  # no clean: the statement must go all the same
            runner.run(_deallocate(engine))

    return test


async def _deallocate(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("DEALLOCATE mine"))


def measure(test: Callable[[], None], rounds: int) -> list[float]:
    test()  # warm-up: dialect initialisation belongs to the first test only
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        test()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def measure_once(test: Callable[[], None]) -> float:
    started = time.perf_counter()
    test()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    setups = {
        "session loop (pooled connection)": session_loop(args.url),
        "function loop, shared engine (pg_engine)": shared_engine_per_loop(args.url),
        "function loop, new engine per test": new_engine_per_loop(args.url),
    }
    print(f"{args.rounds} tests each; ms per test\n\n| setup | median | min-max |\n|---|---|---|")
    for label, test in setups.items():
        ms = measure(test, args.rounds)
        print(f"| {label} | {statistics.median(ms):.2f} | {min(ms):.2f}-{max(ms):.2f} |")
    print(
        "\nThe clean at a test's end (session loop): ms per test, median (min-max), interleaved"
        "\n\n| the test | no clean | the plugin's clean | the clean before |\n|---|---|---|---|"
    )
    cases = clean_cases(args.url)
    timings: dict[str, list[float]] = {label: [] for label in cases}
    for test in cases.values():
        test()  # warm-up
    for _ in range(args.rounds):
        for label, test in cases.items():
            timings[label].append(measure_once(test))
    labels = list(dict.fromkeys(label.split(" | ")[0] for label in cases))
    for label in labels:
        cells = [timings[f"{label} | {clean}"] for clean in ("none", "plugin", "before")]
        shown = " | ".join(
            f"{statistics.median(ms):.3f} ({min(ms):.3f}-{max(ms):.3f})" for ms in cells
        )
        print(f"| {label} | {shown} |")


if __name__ == "__main__":
    main()
