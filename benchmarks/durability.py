"""What ``synchronous_commit = off`` saves a committing test, on the server you point it at.

    python benchmarks/durability.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
                                    [--rounds 200]

A "test" inserts 5 rows into a table and commits. Both variants run interleaved on one database
this script creates (and drops), with the setting as the plugin applies it: ``ALTER DATABASE ...
SET synchronous_commit`` (off) versus the server's own setting (``pgtemplate_durable = true``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg


async def one_commit(conn: asyncpg.Connection) -> float:
    began = time.perf_counter()
    async with conn.transaction():
        await conn.executemany("INSERT INTO item (n) VALUES ($1)", [(i,) for i in range(5)])
    return time.perf_counter() - began


async def measure(url: str, rounds: int) -> dict[str, list[float]]:
    name = f"pgtemplate_bench_durability_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        setup = await asyncpg.connect(url, database=name)
        await setup.execute("CREATE TABLE item (id serial PRIMARY KEY, n int)")
        await setup.close()
        server_default = await admin.fetchval("SHOW synchronous_commit")
        durable = await asyncpg.connect(url, database=name)
        await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        fast = await asyncpg.connect(url, database=name)  # new sessions read the database's setting
        times: dict[str, list[float]] = {f"server default ({server_default})": [], "off": []}
        for _ in range(rounds):
            for label, conn in zip(times, (durable, fast), strict=True):
                times[label].append(await one_commit(conn))
        await durable.close()
        await fast.close()
        return times
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    times = asyncio.run(measure(args.url, args.rounds))
    medians = {label: 1000 * statistics.median(values) for label, values in times.items()}
    print(f"{args.rounds} committing tests each, interleaved; median ms per commit")
    print("| synchronous_commit | ms per committing test |\n|---|---|")
    for label, ms in medians.items():
        print(f"| {label} | {ms:.2f} |")
    durable, fast = medians.values()
    print(f"\nsaved per committing test: {durable - fast:.2f} ms ({durable / fast:.1f}x)")


if __name__ == "__main__":
    main()
