"""Per-test reset overhead of each strategy against the floor (no reset at all).

A "test" inserts 5 rows into 3 tables through the worker connection and commits; the reset
runs right after on the same connection. Templates have 10, 50, 200 tables: every fifth has 3
seed rows, every third references a seeded table. Columns: ``restore`` is the ``truncate``
strategy (the 3 tables empty in the template, or one with seed rows, which are copied back);
``rollback`` runs the test inside an outer transaction whose commit is a savepoint release, rolls
it back, then runs the exact check; ``recreate`` drops the database and renames a spare clone
in (the spare's clone happens in the background in the plugin and is not timed here);
``truncate-all`` is TRUNCATE of every table.

A second table (``--mode checks`` prints only it) times what runs when nothing changed: the check
before a test (``restore`` on an unchanged database: the detection query, schema probe included)
and the schema probe's own share (the detection query with and without it, interleaved).

    python benchmarks/reset_overhead.py [--tables 10 50 200] [--rounds N] [--url URL]
        [--mode all|checks]

Every database is named ``pgtemplate_snaptest_<hex>`` and dropped at the end, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from pytest_pgtemplate.databases import drop
from pytest_pgtemplate.reset.snapshot import RestoreStats, Snapshot, capture, restore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
Reset = Callable[[asyncpg.Connection], Awaitable[object]]


@dataclass
class Timing:
    totals: list[float]  # test + reset, ms
    resets: list[float]  # reset alone, ms

    def cell(self) -> str:
        return (
            f"{statistics.median(self.totals):.2f} ({min(self.totals):.2f}-{max(self.totals):.2f})"
        )

    @property
    def total(self) -> float:
        return statistics.median(self.totals)

    @property
    def reset(self) -> float:
        return statistics.median(self.resets)


def schema(tables: int) -> str:
    statements = []
    for i in range(tables):
        parent = (i // 5) * 5
        fk = f" REFERENCES t{parent:03d}" if i % 3 == 1 and parent != i else ""
        statements.append(
            f"CREATE TABLE t{i:03d} (id serial PRIMARY KEY, parent_id int{fk}, "
            "payload text NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT now())"
        )
        if i % 5 == 0:
            statements.append(f"INSERT INTO t{i:03d} (payload) VALUES ('a'), ('b'), ('c')")
    return ";\n".join(statements)


def test_body(touched: list[str]) -> str:
    inserts = [f"INSERT INTO {t} (payload) SELECT 'x' FROM generate_series(1, 5)" for t in touched]
    return ";\n".join(["BEGIN", *inserts, "COMMIT"])


async def truncate_all_statement(conn: asyncpg.Connection) -> str:
    """What the plugin's ``truncate-all`` strategy runs (its table list is cached, so here too)."""
    names = await conn.fetch(
        "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables ORDER BY 1"
    )
    return f"TRUNCATE {', '.join(row[0] for row in names)} CASCADE"


@dataclass
class Worker:
    """One clone of the template, one connection, one way to reset after each test."""

    conn: asyncpg.Connection
    body: str
    reset: Reset | None
    timing: Timing
    before: Reset | None = None  # untimed preparation (recreate's background spare clone)

    async def round(self, record: bool) -> None:
        if self.before is not None:
            await self.before(self.conn)
        started = time.perf_counter()
        await self.conn.execute(self.body)
        tested = time.perf_counter()
        if self.reset is not None:
            await self.reset(self.conn)
        done = time.perf_counter()
        if record:
            self.timing.totals.append((done - started) * 1000)
            self.timing.resets.append((done - tested) * 1000)


@dataclass
class Server:
    url: str
    admin: asyncpg.Connection
    created: list[str]

    async def create(self, template: str | None = None) -> str:
        name = f"pgtemplate_snaptest_{secrets.token_hex(6)}"
        self.created.append(name)
        source = f' TEMPLATE "{template}"' if template else ""
        await self.admin.execute(f'CREATE DATABASE "{name}"{source}')
        return name

    async def drop_all(self) -> None:
        for name in reversed(self.created):
            await drop(self.admin, name)
        self.created.clear()


async def worker(server: Server, template: str, strategy: str, touched: list[str]) -> Worker:
    """A clone per strategy, so that TRUNCATE-all cannot spoil the others' seed rows."""
    conn = await asyncpg.connect(server.url, database=await server.create(template))
    if strategy == "floor":
        return Worker(conn, test_body(touched), None, Timing([], []))
    if strategy == "rollback":
        return await rollback_worker(conn, touched)
    if strategy == "recreate":
        return await recreate_worker(server, template, conn, touched)
    if strategy == "truncate-all":
        statement = await truncate_all_statement(conn)

        async def reset(c: asyncpg.Connection) -> object:
            return await c.execute(statement)
    else:
        snapshot = await capture(conn)

        async def reset(c: asyncpg.Connection) -> object:
            return await restore(c, snapshot)

    return Worker(conn, test_body(touched), reset, Timing([], []))


async def rollback_worker(conn: asyncpg.Connection, touched: list[str]) -> Worker:
    snapshot = await capture(conn)
    body = (
        test_body(touched)
        .replace("BEGIN", "BEGIN; SAVEPOINT t")
        .replace("COMMIT", "RELEASE SAVEPOINT t")
    )

    async def reset(c: asyncpg.Connection) -> object:
        await c.execute("ROLLBACK")
        return await restore(c, snapshot)

    return Worker(conn, body, reset, Timing([], []))


async def recreate_worker(
    server: Server, template: str, conn: asyncpg.Connection, touched: list[str]
) -> Worker:
    """Swaps connections under the Worker: the reset reconnects to the renamed spare."""
    name = await conn.fetchval("SELECT current_database()")
    spare = f"{name}_s"
    server.created.append(spare)
    state: dict[str, asyncpg.Connection] = {}

    async def prepare(c: asyncpg.Connection) -> object:
        return await server.admin.execute(f'CREATE DATABASE "{spare}" TEMPLATE "{template}"')

    async def reset(c: asyncpg.Connection) -> object:
        await c.close()
        await server.admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await server.admin.execute(f'ALTER DATABASE "{spare}" RENAME TO "{name}"')
        state["conn"] = await asyncpg.connect(server.url, database=name)
        return None

    each = Worker(conn, test_body(touched), reset, Timing([], []), before=prepare)
    original_round = each.round

    async def round_(record: bool) -> None:
        await original_round(record)
        each.conn = state.pop("conn", each.conn)

    each.round = round_  # type: ignore[method-assign]
    return each


async def run_rounds(workers: list[Worker], rounds: int) -> None:
    """Round-robin, so that the shared disk's slow moments hit every strategy alike."""
    for round_ in range(rounds + 3):  # 3 warm-up rounds
        for each in workers:
            await each.round(record=round_ >= 3)


async def build_template(server: Server, tables: int) -> str:
    template = await server.create()
    build = await asyncpg.connect(server.url, database=template)
    try:
        await build.execute(schema(tables))
    finally:
        await build.close()
    await server.admin.execute(f'ALTER DATABASE "{template}" WITH IS_TEMPLATE true')
    return template


async def one_size(server: Server, tables: int, rounds: int) -> str:
    template = await build_template(server, tables)
    empty, seeded = ["t001", "t002", "t003"], ["t001", "t002", "t005"]
    runs = [
        ("floor", empty),
        ("restore", empty),
        ("restore", seeded),
        ("rollback", empty),
        ("recreate", empty),
        ("truncate-all", empty),
    ]
    workers = [await worker(server, template, strategy, touched) for strategy, touched in runs]
    try:
        await run_rounds(workers[:4], rounds)
        await run_rounds(workers[4:5], rounds)  # apart: file churn would slow the others
        await run_rounds(workers[5:], rounds)
        for each in workers[1:3]:  # nothing left to undo: restore was exact
            if each.reset is None or await each.reset(each.conn) != RestoreStats():
                raise RuntimeError("restore left the worker database unlike the template")
    finally:
        for each in workers:
            await each.conn.close()
    await server.drop_all()
    floor, plain, with_seed, rollback, recreate, truncate = (each.timing for each in workers)
    return (
        f"| {tables} | {floor.cell()} | {plain.cell()} | {with_seed.cell()} | {rollback.cell()} "
        f"| {recreate.cell()} | {truncate.cell()} | {plain.total - floor.total:.2f} "
        f"| {with_seed.total - floor.total:.2f} | {rollback.total - floor.total:.2f} "
        f"| {truncate.reset / plain.reset:.0f}x |"
    )


def without_schema_probe(detect_sql: str) -> str:
    """The detection query as it was before the schema probe (its last UNION ALL branch)."""
    data_only = detect_sql.rsplit("\nUNION ALL ", 1)[0]
    return f"{data_only}\nUNION ALL SELECT -1, 0 WHERE $3::bigint[] IS NULL"


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def check_costs(server: Server, tables: int, rounds: int) -> str:
    """ms per call on an unchanged clone: the setup check, the detection with/without probe."""
    template = await build_template(server, tables)
    conn = await asyncpg.connect(server.url, database=await server.create(template))
    try:
        snapshot: Snapshot = await capture(conn)
        full = await conn.prepare(snapshot.detect_sql)
        data = await conn.prepare(without_schema_probe(snapshot.detect_sql))
        args = (str(snapshot.reference_xid), str(snapshot.catalog.reference_xid))

        async def setup_check() -> None:
            if await restore(conn, snapshot) != RestoreStats():
                raise RuntimeError("an unchanged database was found changed")

        calls = [setup_check, lambda: data.fetch(*args, snapshot.catalog.counts)]
        calls.append(lambda: full.fetch(*args, snapshot.catalog.counts))
        samples: list[list[float]] = [[], [], []]
        for round_ in range(rounds * 10 + 20):  # interleaved; 20 warm-up calls
            for each, call in zip(samples, calls, strict=True):
                elapsed = await timed(call)
                if round_ >= 20:
                    each.append(elapsed)
    finally:
        await conn.close()
    await server.drop_all()
    setup, data_only, with_probe = (statistics.median(each) for each in samples)
    return (
        f"| {tables} | {setup:.3f} | {data_only:.3f} | {with_probe:.3f} "
        f"| {with_probe - data_only:.3f} |"
    )


async def main(url: str, sizes: list[int], rounds: int, mode: str) -> None:
    server = Server(url, await asyncpg.connect(url), [])
    try:
        settings = await server.admin.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'full_page_writes', 'server_version') ORDER BY 1"
        )
        print(", ".join(f"{row['name']}={row['setting']}" for row in settings))
        if mode == "all":
            await strategies_table(server, sizes, rounds)
        print(
            f"\n{rounds * 10} calls each, interleaved; ms per call (median) on an unchanged clone\n"
        )
        print(
            "| tables | setup check (restore, nothing changed) | detection without schema probe "
            "| detection with schema probe | schema probe cost |"
        )
        print("|---|---|---|---|---|")
        for tables in sizes:
            print(await check_costs(server, tables, rounds), flush=True)
    finally:
        await server.drop_all()
        await server.admin.close()


async def strategies_table(server: Server, sizes: list[int], rounds: int) -> None:
    print(f"{rounds} rounds; ms per test (median (min-max)) = the test's own work + the reset\n")
    print(
        "| tables | no reset (floor) | truncate (restore) | truncate, 1 seeded table touched "
        "| rollback | recreate (foreground) | truncate-all | truncate - floor "
        "| truncate seeded - floor | rollback - floor | truncate-all / truncate (reset only) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for tables in sizes:
        print(await one_size(server, tables, rounds), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Per-test reset overhead, printed as markdown.")
    parser.add_argument("--tables", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--url", default=DEFAULT_URL, help="admin URL of the server")
    parser.add_argument("--mode", choices=["all", "checks"], default="all")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.tables, args.rounds, args.mode))
