"""What having the plugin installed costs a suite with no database test (issue 19).

``python benchmarks/inert.py [--rounds N]``: the plugin's import time on top of pytest and xdist
(``python -X importtime``, its cumulative figure), then a one-test suite's whole ``pytest`` run
with the plugin and with ``-p no:pgtemplate``, interleaved, median and min per side. It needs no
server: an inert plugin starts none.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_IMPORT = "import pytest, xdist.plugin; import pytest_pgtemplate.plugin"
_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| pytest_pgtemplate\.plugin$", re.MULTILINE)


def import_ms() -> float:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _IMPORT],
        capture_output=True,
        text=True,
        check=True,
    )
    found = _LINE.search(done.stderr)
    if found is None:
        raise RuntimeError("no import time line for pytest_pgtemplate.plugin")
    return int(found.group(1)) / 1000


def run_s(suite: Path, *extra: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTEMPLATE_")}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
        cwd=suite,
        env=env,
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    imports = sorted(import_ms() for _ in range(rounds))
    with tempfile.TemporaryDirectory(prefix="pgtemplate-inert-") as directory:
        suite = Path(directory)
        (suite / "pytest.ini").write_text("[pytest]\n")
        (suite / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
        with_plugin: list[float] = []
        without: list[float] = []
        run_s(suite)  # warm-up: bytecode caches, the OS's file cache
        for _ in range(rounds):
            with_plugin.append(run_s(suite))
            without.append(run_s(suite, "-p", "no:pgtemplate"))
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{rounds} rounds, load {load}, Python {sys.version.split()[0]}")
    print()
    print("| figure | min | median |")
    print("|---|---|---|")
    print(
        f"| import of pytest_pgtemplate.plugin after pytest + xdist, ms "
        f"| {imports[0]:.1f} | {statistics.median(imports):.1f} |"
    )
    for label, walls in (("with the plugin", with_plugin), ("-p no:pgtemplate", without)):
        print(f"| one-test run, {label}, s | {min(walls):.3f} | {statistics.median(walls):.3f} |")
    extra = [a - b for a, b in zip(with_plugin, without, strict=True)]
    print(
        f"| the plugin's share of a run, ms (paired rounds) "
        f"| {1000 * min(extra):.1f} | {1000 * statistics.median(extra):.1f} |"
    )


if __name__ == "__main__":
    main()
