"""What the check's parts cost the server, hot, at 10 to 1000 tables (issue 16's analysis).

    python benchmarks/check_cost.py [--tables 10 50 200 1000] [--rounds N] [--url URL]

Each figure is a statement run back to back on the plugin's own connection to an unchanged clone
(one round trip to a backend that is awake), min / median / max ms of ``--rounds`` runs after 5
warm-up runs, every (size, variant) interleaved in a shuffled order per round:

- the check before a test (the sequences of marked tables) and after one (every sequence): their
  difference is the comparison of every sequence;
- the check before a test with its two switches as parameters ($1, $2), as before b989dce, right
  after the same statement run as after a test (as the plugin alternated them): the server
  (``plan_cache_mode = auto``, its default) chose a custom plan, planned anew, at every execution
  (the plan counts are reported);
- the scan of ``pg_index`` for an index marked by ``CLUSTER ... USING`` alone;
- ``SELECT 1``: the round trip itself;
- with WAL marks, the procedure (a flush, the WAL read, the same query): right after another
  call, and without a start (every sequence compared, what a test that wrote more WAL than
  the budget gets).

Without --url the plugin's own server runs it. Databases are ``pgtemplate_bench_*``, dropped at
the end. The report is printed and written to CHECK_COST.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import asyncpg

from pytest_pgtemplate.reset import sql
from pytest_pgtemplate.reset.check import WAL_BYTES_PER_SEQUENCE
from pytest_pgtemplate.reset.resetter import open_resetter
from reset_overhead import (
    TIMEOUT,
    WARM_UP,
    Server,
    build_template,
    clone_worker,
    header,
    on_server,
    with_server,
)

# The check before b989dce: the same query, its switches as parameters (private names on
# purpose: this form is kept here only to be measured against).
PARAMETERISED = (
    sql._CHECK.replace("{large_object_data}", sql._LARGE_OBJECT_DATA)
    .replace("{index_written}", "true")
    .replace("{restore}", "")
    .replace("{sequences}", sql._EVERY_SEQUENCE.replace("{every_sequence}", "$1"))
    .replace("{marked_sequences}", "NOT $1")
    .replace("{databases}", "$2")
)
# The procedure (WAL marks): a flush, the WAL since the start read, the same query. Started
# right after the previous call (nothing since but that call's own flush), and with no start
# (every sequence compared: what a test that wrote more WAL than the budget gets).
WAL_FROM_LAST = "check with WAL marks (CALL), after a test that wrote nothing"
WAL_EVERY = "check with WAL marks (CALL), every sequence compared"

# variant: (query, the arguments of the call that wakes the backend, those of the timed call)
VARIANTS: dict[str, tuple[str, tuple[object, ...], tuple[object, ...]]] = {
    "round trip (SELECT 1)": ("SELECT 1", (), ()),
    "check before a test": (sql.check_query(True, all_sequences=False, databases=False), (), ()),
    "check after a test (every sequence)": (
        sql.check_query(True, all_sequences=True, databases=False),
        (),
        (),
    ),
    # As the plugin ran it: after a test, then before the next, one statement for both.
    "check before, switches as parameters": (PARAMETERISED, (True, False), (False, False)),
    "pg_index scan (CLUSTER)": (sql.CLUSTERED, (), ()),
    WAL_FROM_LAST: (sql.CALL_CHECK, (), ()),
    WAL_EVERY: (sql.CALL_CHECK, (), ()),
}
Samples = dict[tuple[int, str], list[float]]


async def measure(server: Server, tables: list[int], rounds: int) -> tuple[Samples, list[str]]:
    conns = {}
    budgets: dict[int, int] = {}
    wal_conns: dict[int, asyncpg.Connection] = {}
    for size in tables:
        print(f"building the {size}-table template and clone", file=sys.stderr, flush=True)
        template = await build_template(server, size, "superuser")
        name = await clone_worker(server, template, True)
        resetter = await open_resetter(server.dsn(name), name, TIMEOUT)
        server.connections.append(resetter.conn)
        # The server's default, as before ea78c02: the resetter now forces generic plans, which
        # would hide what the parameterised form cost (the literal forms have no parameters).
        await resetter.conn.execute("SET plan_cache_mode = auto")
        conns[size] = resetter.conn
        # The procedure as the plugin runs it: its own resetter, generic plans (its statements
        # take parameters; under `auto` each call re-planned the whole check, about 1 ms).
        wal = await open_resetter(server.dsn(name), name, TIMEOUT, resetter.known, fresh=False)
        server.connections.append(wal.conn)
        wal_conns[size] = wal.conn
        budgets[size] = WAL_BYTES_PER_SEQUENCE * len(resetter.layout.sequences)
        if not resetter.layout.wal_marks:
            raise SystemExit("the server has no pg_walinspect: the WAL variants cannot run")
    samples: Samples = {}
    rng = random.Random(16)
    blocks = [(size, variant) for size in tables for variant in VARIANTS]
    for number in range(WARM_UP + rounds):
        rng.shuffle(blocks)
        for size, variant in blocks:
            query, waking, timed = VARIANTS[variant]
            conn = conns[size]
            if variant in (WAL_FROM_LAST, WAL_EVERY):
                conn, waking = wal_conns[size], (None, 0, False, False)
            await conn.fetch(query, *waking)  # wakes the backend: the next call is hot
            if variant == WAL_FROM_LAST:
                start = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
                timed = (start, budgets[size], False, False)
            elif variant == WAL_EVERY:
                timed = (None, budgets[size], False, False)
            started = time.perf_counter()
            await conn.fetch(query, *timed)
            if number >= WARM_UP:
                samples.setdefault((size, variant), []).append(
                    (time.perf_counter() - started) * 1000
                )
    plans = [await decode_rate(next(iter(wal_conns.values())))]
    for size, conn in conns.items():
        row = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
            PARAMETERISED,
        )
        plans.append(f"{size} tables: {row['generic_plans']} generic, {row['custom_plans']} custom")
    return samples, plans


async def decode_rate(conn: asyncpg.Connection) -> str:
    """How fast pg_walinspect reads WAL, against which WAL_BYTES_PER_SEQUENCE is set: 10,000
    rows written and deleted in a table made for it (in the clone, dropped with it)."""
    await conn.execute("CREATE TABLE bench_rows (id serial PRIMARY KEY, v int)")
    start = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
    await conn.execute(
        "INSERT INTO bench_rows (v) SELECT g FROM generate_series(1, 10000) g;"
        " DELETE FROM bench_rows"
    )
    end = (await conn.fetchrow(sql.CALL_CHECK, None, 0, False, False))["upto"]
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        await conn.fetchval(
            "SELECT count(*) FROM pgtemplate.pg_get_wal_records_info($1, $2)", start, end
        )
        best = min(best, time.perf_counter() - started)
    rate = (end - start) / best / 1e6
    return f"WAL read by pg_walinspect: {rate:.0f} bytes/us (over {end - start} bytes)"


async def bench(url: str, tables: list[int], rounds: int, own: bool) -> tuple[Samples, list[str]]:
    return await on_server(url, own, lambda server, _: measure(server, tables, rounds))


def report(samples: Samples, plans: list[str], tables: list[int], rounds: int, url: str) -> str:
    lines = [
        *header(
            "What the check's parts cost, hot (issue 16)", "python benchmarks/check_cost.py", url
        ),
        f"- {rounds} rounds after {WARM_UP} warm-up rounds, sizes and variants interleaved",
        "",
        "ms, min / median / max, each run right after the same statement (a backend awake):",
        "",
        "| variant | " + " | ".join(f"{size} tables" for size in tables) + " |",
        "|---|" + "---|" * len(tables),
    ]
    for variant in VARIANTS:
        cells = []
        for size in tables:
            values = samples[(size, variant)]
            cells.append(f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", plans[0], "", "Plans of the parameterised form (pg_prepared_statements): "]
    lines[-1] += "; ".join(plans[1:])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="The check's parts, hot, as Markdown.")
    parser.add_argument("--tables", type=int, nargs="+", default=[10, 50, 200, 1000])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--url", help="admin URL; default: the plugin's own server")
    args = parser.parse_args()

    def run(url: str, own: bool) -> tuple[Samples, list[str], str]:
        return (*asyncio.run(bench(url, args.tables, args.rounds, own)), url)

    samples, plans, url = with_server(args.url, run)
    text = report(samples, plans, args.tables, args.rounds, url)
    print(text)
    Path(__file__).with_name("CHECK_COST.md").write_text(text)


if __name__ == "__main__":
    main()
