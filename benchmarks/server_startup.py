"""Cold and warm start of the plugin's own server, and its stop: median of several rounds.

    python benchmarks/server_startup.py [--rounds 5] [--bin-dir DIR ...]

With several ``--bin-dir`` (e.g. the majors ``.ci/pg-binaries`` unpacks), one row per major.

Cold = initdb + start in an empty cache; warm = start of the data directory a previous run
left (what every run after the first pays). Each round uses a fresh cache on tmpfs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
import uuid
from pathlib import Path

from pytest_pgtemplate.server.binaries import find_binaries
from pytest_pgtemplate.server.own import start, stop


def one_round(cache: Path, bin_dir: str | None) -> tuple[float, float, float]:
    binaries = find_binaries(bin_dir)
    cold = start(binaries, cache=cache, owner_pid=os.getpid())
    began = time.perf_counter()
    stop(cold)
    stopped = time.perf_counter() - began
    began = time.perf_counter()
    warm = start(binaries, cache=cache, owner_pid=os.getpid())
    warm_seconds = time.perf_counter() - began
    if not warm.warm or cold.warm:
        raise RuntimeError("expected a cold start, then a warm one")
    stop(warm)
    return cold.start_seconds, warm_seconds, stopped


def measure(bin_dir: str | None, rounds: int, base: Path) -> list[tuple[float, float, float]]:
    results = []
    for _ in range(rounds):
        cache = base / f"pgtemplate-bench-{uuid.uuid4().hex[:8]}"
        try:
            results.append(one_round(cache, bin_dir))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return results


def cell(values: tuple[float, ...]) -> str:
    ms = [1000 * v for v in values]
    return f"{statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bin-dir", action="append", help="server programs (default: search)")
    args = parser.parse_args()
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path("/tmp")
    print(f"{args.rounds} rounds, cache on {base}; median (min-max) ms")
    print("| PostgreSQL | cold start (initdb + start) | warm start | stop |\n|---|---|---|---|")
    for bin_dir in args.bin_dir or [None]:
        binaries = find_binaries(bin_dir)
        cold, warm, stop_ = zip(*measure(bin_dir, args.rounds, base), strict=True)
        cells = " | ".join(cell(values) for values in (cold, warm, stop_))
        print(f"| {binaries.version} ({binaries.origin}) | {cells} |")


if __name__ == "__main__":
    main()
