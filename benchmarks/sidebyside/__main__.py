"""``python -m sidebyside [--quick]``: generate the suites, run every setup, write the report.

Everything this creates on the server starts with ``bench_<run id>_`` (or is a plugin
template or worker database tied to such a suite) and is dropped at the end, also on
Ctrl-C or SIGTERM; scratch files live in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from . import chart, prepare, report
from .aggregate import CaseStats, all_stats
from .cleanup import clean_run
from .config import Plan, full_plan, quick_plan
from .machine import describe
from .reuse import ReuseCheck, check_reuse
from .runner import BENCH_DIR, Context, RunResult, command, print_progress, run_plan
from .targets import evaluate

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = _plan(args)
    out: Path = args.out or (BENCH_DIR / "out" / "quick" if args.quick else BENCH_DIR)
    run_id = secrets.token_hex(4)
    ctx = Context(run_id, Path(tempfile.mkdtemp(prefix=f"pgtemplate-bench-{run_id}-")), args.url)
    signal.signal(signal.SIGTERM, _interrupted)
    started = time.monotonic()
    keep = args.keep
    try:
        data = {"machine": describe(args.url), "server_url": args.url, "plan": plan.name}
        data["command"] = _command_line(argv)
        data["plugin_source"] = prepare.freeze_plugin(ctx)
        prepare.preflight(ctx)
        prepare.write_suites(plan, ctx)
        prepare.create_floor_databases(plan, ctx)
        runs = run_plan(plan, ctx, print_progress)
        reuse = None if args.no_reuse else check_reuse(ctx, plan.default)
        data["elapsed_s"] = time.monotonic() - started
        failed = _write(out, plan, ctx, data, runs=runs, reuse=reuse)
        keep = keep or failed
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"sidebyside: {exc}", file=sys.stderr)
        return 2
    finally:
        clean_run(ctx, keep)
    print(f"done in {(time.monotonic() - started) / 60:.1f} min; wrote {out}/RESULTS.md")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sidebyside", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI smoke: < 2 min, into out/quick")
    parser.add_argument("--tests", type=int, help="tests per suite (200; quick: 40)")
    parser.add_argument("--rounds", type=int, help="timed rounds (3; quick: 1)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server (default {DEFAULT_URL})")
    parser.add_argument("--out", type=Path, help="where results go (default: benchmarks/)")
    parser.add_argument("--no-reuse", action="store_true", help="skip the template reuse check")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser


def _plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        return quick_plan(args.tests or 40, args.rounds or 1)
    return full_plan(args.tests or 200, args.rounds or 3)


def _command_line(argv: list[str] | None) -> str:
    """What to type to get these figures again: the make target when it was one."""
    given = argv if argv is not None else sys.argv[1:]
    direct = " ".join(["PYTHONPATH=benchmarks python -m sidebyside", *given])
    if given == ["--quick"]:
        return f"make bench-quick ({direct})"
    return f"make bench ({direct})" if not given else direct


def _interrupted(signum: int, frame: FrameType | None) -> None:
    """SIGTERM takes the same path as Ctrl-C: stop the current run, drop everything."""
    raise KeyboardInterrupt


def _write(
    out: Path,
    plan: Plan,
    ctx: Context,
    data: dict[str, object],
    *,
    runs: list[RunResult],
    reuse: ReuseCheck | None,
) -> bool:
    """Write RESULTS.md, results.json and results.png; True when a run failed unexpectedly."""
    stats = all_stats(plan.cases, runs)
    targets = evaluate(stats, plan.default, reuse)
    data["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]  # type: ignore[index]
    sections = {
        "Targets (default workload, ratios within this run)": report.targets_section(targets),
        "Where the time goes": report.phase_table(stats, plan.default, "2")
        + report.phase_table(stats, plan.default, "0"),
        "Template reuse: the plugin's own server, run twice": report.reuse_section(reuse),
        "How each setup works": [report.HOW],
        "What was cut": [*(f"- {cut}" for cut in plan.cuts), ""],
        "Exact pytest commands (default workload, -n 2)": _commands(plan, ctx),
    }
    text = report.markdown(data, plan, stats, sections)
    report.write(out, text, report.results_json(data, stats, runs, targets))
    chart.draw(plan, stats, out / "results.png")
    print("\n".join(report.targets_section(targets)))
    return _unexpected_failures(stats)


def _commands(plan: Plan, ctx: Context) -> list[str]:
    lines = [
        "Run in the generated suite's directory, with `BENCH_*` variables set by the runner:",
        "",
    ]
    for case in plan.cases:
        if case.workload == plan.default and case.workers == "2" and not case.expect_failures:
            cmd = " ".join(command(case, ctx)[1:]).replace(ctx.admin_url, "$URL")
            lines.append(f"- {case.setup.label}: `python {cmd}`")
    return [*lines, ""]


def _unexpected_failures(stats: dict[str, CaseStats]) -> bool:
    bad = [s for s in stats.values() if s.failures and not s.case.expect_failures]
    for s in bad:
        print(f"UNEXPECTED: {s.case.key}: {s.failures} failed/errors: {s.error}", file=sys.stderr)
    return bool(bad)


if __name__ == "__main__":
    sys.exit(main())
