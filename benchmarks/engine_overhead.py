"""What ``pg_engine`` costs a test, per pytest-asyncio loop scope: median of many "tests".

    python benchmarks/engine_overhead.py [--rounds 50] [--url URL]

A "test" opens a connection from the engine and runs SELECT 1. ``session loop`` reuses the
pooled connection (what pg_engine does under a session-scoped loop); ``function loop, shared
engine`` is what pg_engine does under function-scoped loops (a fresh loop per test, one engine
whose pool is disposed on each loop); ``function loop, new engine`` is the naive alternative.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

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


def measure(test: Callable[[], None], rounds: int) -> list[float]:
    test()  # warm-up: dialect initialisation belongs to the first test only
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        test()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


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


if __name__ == "__main__":
    main()
