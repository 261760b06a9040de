"""Cold and warm start of the plugin's own server, and its stop: median of several rounds.

    python benchmarks/server_startup.py [--rounds 5]

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

from pytest_pgtemplate._binaries import find_binaries
from pytest_pgtemplate._embedded import start, stop


def one_round(cache: Path) -> tuple[float, float, float]:
    binaries = find_binaries(None)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path("/tmp")
    results = []
    for _ in range(rounds):
        cache = base / f"pgtemplate-bench-{uuid.uuid4().hex[:8]}"
        try:
            results.append(one_round(cache))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    binaries = find_binaries(None)
    print(f"PostgreSQL {binaries.version} ({binaries.origin}), {rounds} rounds, cache on {base}")
    print("| phase | median ms | min-max ms |\n|---|---|---|")
    for label, values in zip(
        ("cold start (initdb + start)", "warm start", "stop"),
        zip(*results, strict=True),
        strict=True,
    ):
        ms = [1000 * v for v in values]
        print(f"| {label} | {statistics.median(ms):.0f} | {min(ms):.0f}-{max(ms):.0f} |")


if __name__ == "__main__":
    main()
