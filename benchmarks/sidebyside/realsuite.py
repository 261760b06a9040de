"""Issue 10's real-suite shape: the plugin, per-worker DELETE-all and function-level, -n 2.

One run, one server, one generated suite: 1,000 async tests, 100 tables, 150 migrations, a
quarter of the tests committing to seeded tables. Everything it creates on the server
starts with ``bench_<run id>_`` and is dropped at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from . import prepare, realsuite_report
from .cleanup import clean_run
from .config import real_suite_plan
from .generate import TESTS_PER_FILE
from .machine import describe
from .runner import BENCH_DIR, Context, RunResult, print_progress, run_plan

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = real_suite_plan(args.tests, args.rounds, args.function_level_tests)
    run_id = secrets.token_hex(4)
    ctx = Context(run_id, Path(tempfile.mkdtemp(prefix=f"pgtemplate-bench-{run_id}-")), args.url)
    signal.signal(signal.SIGTERM, _interrupted)
    started = time.monotonic()
    try:
        data: dict[str, object] = {"machine": describe(args.url), "server_url": args.url}
        data["command"] = " ".join(["python benchmarks/real_suite.py", *_given(argv)])
        data["plugin_source"] = prepare.freeze_committed_plugin(ctx)
        prepare.preflight(ctx)
        prepare.write_suites(plan, ctx)
        runs = run_plan(plan, ctx, print_progress)
        data["elapsed_s"] = time.monotonic() - started
        data["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]  # type: ignore[index]
        text = realsuite_report.markdown(data, plan, runs)
        raw = _write(args.out, text, data, runs, run_id)
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"real_suite: {exc}", file=sys.stderr)
        return 2
    finally:
        clean_run(ctx, args.keep)
    print(text, end="")
    print(f"done in {(time.monotonic() - started) / 60:.1f} min; wrote {args.out} and {raw}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/real_suite.py", description=__doc__)
    parser.add_argument("--tests", type=int, default=1000, help="tests in the suite (1000)")
    parser.add_argument(
        "--function-level-tests",
        type=_whole_files,
        default=100,
        help="function-level runs only its first N tests; its total is extrapolated (100; "
        "at least --tests: run them all)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the other setups (3)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server (default {DEFAULT_URL})")
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR / "REAL_SUITE.md", help="markdown file to write"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser


def _whole_files(value: str) -> int:
    """Tests run file by file: round up to a multiple of the tests per generated file."""
    tests = int(value)
    if tests < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {tests})")
    return -(-tests // TESTS_PER_FILE) * TESTS_PER_FILE


def _given(argv: list[str] | None) -> list[str]:
    return argv if argv is not None else sys.argv[1:]


def _interrupted(signum: int, frame: FrameType | None) -> None:
    """SIGTERM takes the same path as Ctrl-C: stop the current run, drop everything."""
    raise KeyboardInterrupt


def _write(
    out: Path, text: str, data: dict[str, object], runs: list[RunResult], run_id: str
) -> Path:
    """The markdown where asked; every run's raw figures (per-test timings included) in a
    file of this run's own under benchmarks/out/real_suite/, so no later run overwrites it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    raw = BENCH_DIR / "out" / "real_suite" / f"{run_id}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    payload = {**data, "runs": [asdict(r) for r in runs]}
    raw.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return raw
