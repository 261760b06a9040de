"""Seeded tables over a long run: the restore of only what a test wrote, against a whole refill.

    python benchmarks/seed_growth.py [--tests N] [--fillers N] [--lines N] [--url URL] [--quick]

Two clones of one template, a test's writes alternating between them: the plugin's restore
inside the check as it is (a seeded table with a primary key loses only the rows written since
the last restore and gets back the seed rows it misses), and the same clone with its
``pgtemplate.tables`` statements set back to a whole refill (every seed row deleted and copied
back at each restore), as before a1e8c53. The test is the real suite's (``make
bench-real-suite``): a customer, an order and two lines, committed, into seeded tables (10, 20
and ``--lines`` rows), and in every fourth test a change to a seed line; ``--fillers`` more
tables refer to the lines, as the real suite's other tables do, so a TRUNCATE of the lines takes
them along.
Reported per block of 100 tests: the reset's median and max (ms), how many resets the client
did (the check leaves a table above 512 kB to it), and the lines table's size with its key
(kB). Without --url the plugin's own server runs it. Databases are ``pgtemplate_bench_*``,
dropped at the end. The report is printed and (not --quick) written to SEED_GROWTH.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from pytest_pgtemplate.databases import mark_finished
from pytest_pgtemplate.reset.install import install
from pytest_pgtemplate.reset.resetter import Resetter, open_resetter
from pytest_pgtemplate.reset.restore import refill_statement
from reset_overhead import TIMEOUT, Server, clone_worker, header, new_name, on_server, with_server

BLOCK = 100
MODES = ("only what the test wrote", "whole refill")
BODY = (
    "BEGIN; INSERT INTO customer (name) VALUES ('c');"
    " INSERT INTO orders (customer_id) VALUES (currval('customer_id_seq'));"
    " INSERT INTO line (order_id, amount) VALUES (currval('orders_id_seq'), 1),"
    " (currval('orders_id_seq'), 2); COMMIT"
)


def body(number: int, lines: int) -> str:
    """Every fourth test also changes a seed row, as a quarter of the real suite's do."""
    if number % 4:
        return BODY
    return f"UPDATE line SET amount = amount + 1 WHERE id = {1 + number // 4 % lines}; {BODY}"


def schema(fillers: int, lines: int) -> str:
    tables = [
        "CREATE TABLE customer (id serial PRIMARY KEY, name text NOT NULL)",
        "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customer)",
        "CREATE TABLE line (id serial PRIMARY KEY, order_id int REFERENCES orders,"
        " amount numeric(12, 2) NOT NULL, note text NOT NULL DEFAULT 'a line of an order')",
        *(
            f"CREATE TABLE filler_{i:03d} (id serial PRIMARY KEY, line_id int REFERENCES line)"
            for i in range(fillers)
        ),
        "INSERT INTO customer (name) SELECT 'seed customer ' || g FROM generate_series(1, 10) g",
        "INSERT INTO orders (customer_id) SELECT 1 + g % 10 FROM generate_series(0, 19) g",
        "INSERT INTO line (order_id, amount) SELECT 1 + g % 20, g"
        f" FROM generate_series(0, {lines - 1}) g",
    ]
    return ";\n".join(tables)


@dataclass
class Block:
    resets: list[float] = field(default_factory=list)
    by_client: int = 0
    size_kb: int = 0


async def template(server: Server, fillers: int, lines: int) -> str:
    name = new_name(server)
    await server.admin.execute(f'CREATE DATABASE "{name}"')
    build = await server.connect(name, True)
    await build.execute(schema(fillers, lines))
    await install(build)
    await build.close()
    await mark_finished(server.admin, name)
    return name


async def whole_refill(resetter: Resetter) -> None:
    """This clone's restore inside the check refills seeded tables whole, and leaves a table
    past 512 kB to the client's TRUNCATE, as before a1e8c53."""
    for table in resetter.layout.tables:
        if table.seed and table.kind == "r":
            await resetter.conn.execute(
                "BEGIN; SET LOCAL pgtemplate.restoring = 'on';"
                f" UPDATE pgtemplate.tables SET empty = 'DELETE FROM ONLY {table.name}',"
                f" refill = $${refill_statement(table)}$$, allowance = 0"
                f" WHERE rel = {table.oid}; COMMIT"
            )


async def measure(server: Server, tests: int, fillers: int, lines: int) -> dict[str, list[Block]]:
    name = await template(server, fillers, lines)
    clones: dict[str, tuple[Resetter, asyncpg.Connection]] = {}
    for mode in MODES:
        clone = await clone_worker(server, name, True)
        resetter = await open_resetter(server.dsn(clone), clone, TIMEOUT)
        server.connections.append(resetter.conn)
        if mode == "whole refill":
            await whole_refill(resetter)
        clones[mode] = (resetter, await server.connect(clone, True))
    blocks: dict[str, list[Block]] = {mode: [Block()] for mode in MODES}
    for number in range(1, tests + 1):
        for mode, (resetter, test) in clones.items():
            await test.execute(body(number, lines))
            started = time.perf_counter()
            outcome = await resetter.reset("restore")
            block = blocks[mode][-1]
            block.resets.append((time.perf_counter() - started) * 1000)
            if outcome.schema or outcome.stats is None:
                raise RuntimeError(f"{mode}: {outcome}")
            block.by_client += not outcome.stats.in_check
            if number % BLOCK == 0:
                block.size_kb = (
                    await test.fetchval(
                        "SELECT pg_relation_size('line') + pg_relation_size('line_pkey')"
                    )
                    // 1024
                )
                if number < tests:
                    blocks[mode].append(Block())
    return blocks


def report(
    blocks: dict[str, list[Block]], tests: int, fillers: int, seed_lines: int, url: str
) -> str:
    command = " ".join(["python benchmarks/seed_growth.py", *sys.argv[1:]])
    out = [
        *header(
            "Seeded tables over a long run: only what the test wrote vs a whole refill",
            command,
            url,
        ),
        f"- {tests} tests on each clone, alternating; {seed_lines} seed lines;"
        f" {fillers} tables refer to the lines",
        "",
        "Per block of 100 tests: reset median / max ms, resets the client did, size of the",
        "lines table and its key at the block's end (kB):",
        "",
        "| tests | " + " | ".join(MODES) + " |",
        "|---|" + "---|" * len(MODES),
    ]
    for index in range(len(blocks[MODES[0]])):
        cells = []
        for mode in MODES:
            b = blocks[mode][index]
            cells.append(
                f"{statistics.median(b.resets):.2f} / {max(b.resets):.1f} ms, "
                f"{b.by_client} by the client, {b.size_kb} kB"
            )
        out.append(f"| {index * BLOCK + 1}-{(index + 1) * BLOCK} | " + " | ".join(cells) + " |")
    for mode in MODES:
        every = [r for b in blocks[mode] for r in b.resets]
        out.append(
            f"\n- {mode}: all {len(every)} resets {sum(every):.0f} ms in all, median"
            f" {statistics.median(every):.2f}, max {max(every):.1f}"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=1000, help="tests on each clone (1000)")
    parser.add_argument("--fillers", type=int, default=97, help="tables referring to lines (97)")
    parser.add_argument("--lines", type=int, default=40, help="seed rows of the lines table (40)")
    parser.add_argument("--url", help="a server (default: the plugin's own)")
    parser.add_argument(
        "--quick", action="store_true", help="100 tests, 3 fillers, printed only (CI's smoke run)"
    )
    args = parser.parse_args()
    if args.quick:
        args.tests, args.fillers = BLOCK, 3

    def work(url: str, own: bool) -> str:
        async def run(server: Server, _: object) -> dict[str, list[Block]]:
            return await measure(server, args.tests, args.fillers, args.lines)

        blocks = asyncio.run(on_server(url, own, run))
        return report(blocks, args.tests, args.fillers, args.lines, url)

    text = with_server(args.url, work)
    print(text, end="")
    if not args.quick:
        Path(__file__).with_name("SEED_GROWTH.md").write_text(text)


if __name__ == "__main__":
    main()
