"""The check after a test with and without WAL marks, on a quiet server (issue 16's sequences).

    python benchmarks/sequence_marks.py [--tables 10 100 200 250 1000] [--rounds N] [--url URL]

``reset_overhead.py`` interleaves about forty backends, every size and column at once; their
caches evict each other's, which buries a difference of a millisecond under the cost of a cold
backend. Here each size runs alone with five clones, as a worker of a suite would see it: the
floor (an untracked template's clone, the bare body), the tracked clone whose check after a test
reads moved sequences from the WAL (whatever the number of sequences: the plugin does so from
WAL_MIN_SEQUENCES on), the same tracking comparing every sequence, the plugin's own choice of
the two, and that choice with the restore planned by the client (not inside the check). A figure
is the check before + the body + reset("restore"), minus the same round's floor, ms, min /
median / max; for the plugin's own choice (both forms), the body + reset("restore") only (a test
right after another's reset starts without the check), with issue 16's targets.

Without --url the plugin's own server runs it. Databases are ``pgtemplate_bench_*``, dropped at
the end. The report is printed and written to SEQUENCE_MARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

import asyncpg

from pytest_pgtemplate.reset.check import WAL_MIN_SEQUENCES
from pytest_pgtemplate.reset.resetter import Known, Resetter, open_resetter
from reset_overhead import (
    TIMEOUT,
    WARM_UP,
    Server,
    build_template,
    cases,
    checked,
    clone_worker,
    header,
    on_server,
    with_server,
)
from reset_overhead_report import bound, cell, ratio

PLUGIN = "as the plugin runs it, right after a reset"
"""The plugin's own choice (the WAL from WAL_MIN_SEQUENCES on), no check before the test: what
a test pays that directly follows another's reset, as most tests of a suite do."""
CLIENT = "the same, restored by the client"
"""The plugin's own choice with the restore planned by the client, as before the check restored
plain changes itself (``Resetter.restore_in_check``)."""
MODES = ("floor", "from the WAL", "every sequence compared", PLUGIN, CLIENT)
CASES = ("nothing changed", "3 tables", "rolled-back insert", "bare nextval()")
Samples = dict[tuple[int, str, str], list[float]]


async def clones(
    server: Server, tables: int
) -> dict[str, tuple[asyncpg.Connection, Resetter | None]]:
    print(f"building the {tables}-table templates and clones", file=sys.stderr, flush=True)
    tracked = await build_template(server, tables, "superuser")
    plain = await build_template(server, tables, "plain")
    found: dict[str, tuple[asyncpg.Connection, Resetter | None]] = {}
    for mode in MODES:
        name = await clone_worker(server, plain if mode == "floor" else tracked, True)
        resetter = None
        if mode != "floor":
            resetter = await open_resetter(server.dsn(name), name, TIMEOUT)
            if mode == "every sequence compared":
                known = resetter.known
                layout = dataclasses.replace(known.layout, sequence_marks="compare")
                await resetter.close()
                resetter = await open_resetter(
                    server.dsn(name), name, TIMEOUT, Known(layout, known.settings)
                )
            if mode not in (PLUGIN, CLIENT):
                resetter.wal_min_sequences = 0
            resetter.restore_in_check = mode != CLIENT
            server.connections.append(resetter.conn)
        found[mode] = (await server.connect(name, True), resetter)
    return found


async def measure(server: Server, tables: int, rounds: int, samples: Samples) -> None:
    workers = await clones(server, tables)
    if not workers["from the WAL"][1] or not workers["from the WAL"][1].uses_wal:
        raise SystemExit("the server has no pg_walinspect: there are no WAL marks to measure")
    bodies = cases(tables)
    rng = random.Random(tables)
    for number in range(WARM_UP + rounds):
        for case in CASES:
            order = list(MODES)
            rng.shuffle(order)
            for mode in order:
                test, resetter = workers[mode]
                started = time.perf_counter()
                if resetter is not None and mode not in (PLUGIN, CLIENT):
                    checked(await resetter.ensure_pristine(), before=True)
                await test.execute(";".join(bodies[case]))
                if resetter is not None:
                    checked(await resetter.reset("restore"), before=False)
                if number >= WARM_UP:
                    elapsed = (time.perf_counter() - started) * 1000
                    samples.setdefault((tables, case, mode), []).append(elapsed)


async def bench(url: str, tables: list[int], rounds: int, own: bool) -> Samples:
    async def work(server: Server, _: object) -> Samples:
        samples: Samples = {}
        for size in tables:  # one size at a time: the point is a server that is not crowded
            await measure(server, size, rounds, samples)
        return samples

    return await on_server(url, own, work)


def report(samples: Samples, tables: list[int], rounds: int, url: str) -> str:
    lines = [
        *header(
            "The check after a test with and without WAL marks (issue 16)",
            " ".join(["python benchmarks/sequence_marks.py", *sys.argv[1:]]),
            url,
        ),
        f"- {rounds} rounds after {WARM_UP} warm-up rounds; one size at a time, five clones",
        f"- The plugin reads the WAL from {WAL_MIN_SEQUENCES} sequences on (one per table here)",
        "",
        "ms over the floor (the check before + body + reset('restore'), minus the same round's",
        "bare body on an untracked clone), min / median / max; the last two columns: body +",
        "reset('restore') with the plugin's own choice of the two, no check before, and the same",
        "with the restore planned by the client instead of done inside the check:",
        "",
        "| case | tables | floor ms | from the WAL | every sequence compared | median saved "
        f"| {PLUGIN} | {CLIENT} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        for size in tables:
            floor = samples[(size, case, "floor")]
            over = {
                mode: [a - b for a, b in zip(samples[(size, case, mode)], floor, strict=True)]
                for mode in MODES[1:]
            }
            wal, every = over["from the WAL"], over["every sequence compared"]
            saved = statistics.median(every) - statistics.median(wal)
            lines.append(
                f"| {case} | {size} | {statistics.median(floor):.2f} | {cell(wal)} | "
                f"{cell(every)} | {saved:.2f} | {cell(over[PLUGIN])} | {cell(over[CLIENT])} |"
            )
    return "\n".join([*lines, "", *_targets(samples, tables)]) + "\n"


def _targets(samples: Samples, tables: list[int]) -> list[str]:
    """Issue 16's per-test targets, judged as reset_overhead.py judges them, on the plugin's own
    column (a test right after a reset: the check before it is skipped, as in a suite)."""
    at = [t for t in tables if t == 200], [t for t in tables if t == 1000]
    return [
        f"Targets ({PLUGIN}, medians):",
        "",
        "- nothing changed <= 0.5 ms at any size: "
        + bound(samples, tables, "nothing changed", PLUGIN, 0.5),
        "- 3 tables at 200 tables <= 1.0 ms: " + bound(samples, at[0], "3 tables", PLUGIN, 1.0),
        "- 3 tables at 1000 tables <= 1.5 ms: " + bound(samples, at[1], "3 tables", PLUGIN, 1.5),
        "- 3 tables, 1000 tables at most 1.5x 10: " + ratio(samples, "3 tables", PLUGIN),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="WAL marks against comparing every sequence.")
    parser.add_argument("--tables", type=int, nargs="+", default=[10, 100, 200, 250, 1000])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--url", help="admin URL; default: the plugin's own server")
    args = parser.parse_args()

    def run(url: str, own: bool) -> tuple[Samples, str]:
        return asyncio.run(bench(url, args.tables, args.rounds, own)), url

    samples, url = with_server(args.url, run)
    text = report(samples, args.tables, args.rounds, url)
    print(text)
    Path(__file__).with_name("SEQUENCE_MARKS.md").write_text(text)


if __name__ == "__main__":
    main()
