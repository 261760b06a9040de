"""Run each case as a real ``pytest`` process, rounds interleaved (A B C A B C ...).

Interleaving spreads machine drift (other load, disk state) over every setup instead of
charging it to whichever setup happened to run during it. Round 0 is a warm-up: it is where
the plugin builds its template (reported as the cold run) and Python writes bytecode caches.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from . import parse
from .config import FLOOR, PLUGIN_DEFAULT, Case, Plan, Workload
from .generate import test_paths

RUN_TIMEOUT = 1800.0
BENCH_DIR = Path(__file__).resolve().parents[1]


@dataclass
class Context:
    run_id: str
    scratch: Path
    admin_url: str
    suites: dict[str, Path] = field(default_factory=dict)
    plugin_src: Path | None = None
    """A frozen copy of the plugin's src/, put before the editable install on PYTHONPATH."""

    def prefix(self, workload: Workload | None = None) -> str:
        """Every database of this run starts with ``bench_<run id>_``."""
        return f"bench_{self.run_id}_" + (workload.key if workload else "")

    def floor_db(self, workload: Workload) -> str:
        return f"{self.prefix(workload)}_floor"

    def server_cache(self, purpose: str) -> Path:
        """The plugin's own server keeps its data here (tmpfs where there is one); removed."""
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() else Path(tempfile.gettempdir())
        return base / f"{self.prefix()}{purpose}"


@dataclass
class RunResult:
    case: str
    round: int
    wall: float
    returncode: int
    outcome: parse.Outcome
    summary: parse.PluginSummary | None
    timings: parse.Timings
    error: str
    log: str


def command(case: Case, ctx: Context, cache: Path | None = None) -> list[str]:
    setup = case.setup
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", case.workers, "-p", "no:cacheprovider"]
    cmd += ["-p", "no:benchmark", "-p", "sidebyside.setups.timing", "-p", setup.module]
    cmd += list(setup.args)
    # ``--opt=value``: pytest takes a separate argument naming an existing directory for a
    # test path when it picks the rootdir, and the cache directory exists from the 2nd run on.
    if setup.needs_url:
        cmd.append(f"--pgtemplate-url={ctx.admin_url}")
    if setup.embedded:
        cmd.append(f"--pgtemplate-cache-dir={cache or ctx.server_cache('embedded')}")
    if case.sample is not None:
        cmd += test_paths(case.sample)
    return cmd


def environment(case: Case, ctx: Context, timings: Path) -> dict[str, str]:
    """No PGTEMPLATE_* from the caller's shell: each setup gets exactly what it says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTEMPLATE_")}
    suite = ctx.suites[case.workload.key]
    env.update(
        PYTHONPATH=os.pathsep.join([*python_path(ctx), str(suite)]),
        BENCH_ADMIN_URL=ctx.admin_url,
        BENCH_DB_PREFIX=ctx.prefix(case.workload),
        BENCH_ALEMBIC_INI=str(suite / "alembic.ini"),
        BENCH_FLOOR_DB=ctx.floor_db(case.workload),
        BENCH_TIMINGS_DIR=str(timings),
    )
    return env


def python_path(ctx: Context) -> list[str]:
    return [*([str(ctx.plugin_src)] if ctx.plugin_src else []), str(BENCH_DIR)]


def run_case(case: Case, ctx: Context, round_no: int, cache: Path | None = None) -> RunResult:
    slug = f"{case.key.replace('/', '_')}_r{round_no}"
    timings = ctx.scratch / "timings" / slug
    timings.mkdir(parents=True, exist_ok=True)
    cmd = command(case, ctx, cache)
    checkpoint(ctx.admin_url)
    code, output, wall = execute(
        cmd, ctx.suites[case.workload.key], environment(case, ctx, timings)
    )
    log = ctx.scratch / "logs" / f"{slug}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(" ".join(cmd) + "\n\n" + output)
    return RunResult(
        case=case.key,
        round=round_no,
        wall=wall,
        returncode=code,
        outcome=parse.outcome(output),
        summary=parse.plugin_summary(output),
        timings=parse.timings(timings),
        error=parse.first_error(output),
        log=str(log),
    )


def checkpoint(admin_url: str) -> None:
    """Untimed, before every run: write out what the previous run left dirty on the shared
    server (fsync on), so its deferred disk work is not charged to whichever setup runs next."""
    asyncio.run(_checkpoint(admin_url))


async def _checkpoint(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def execute(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, float]:
    """Wall time of the whole process, start-up and collection included (what a user waits)."""
    started = time.perf_counter()
    with subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=RUN_TIMEOUT)
        except BaseException:
            interrupt(proc)
            raise
    return proc.returncode, output, time.perf_counter() - started


def interrupt(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C the run's process group so the plugin drops its databases; then insist."""
    for sig, grace in ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
            return


def schedule(plan: Plan) -> Iterator[tuple[int, Case]]:
    """Warm-ups (round 0), then round r runs every case that has at least r rounds.

    Round 1 keeps the plan's order; later rounds are shuffled (seeded: reproducible), so no
    setup always runs right after the same one.
    """
    for workload in plan.workloads:
        for case in plan.cases:
            if case.workload == workload and _warms_up(plan, case):
                yield 0, case
    for round_no in range(1, plan.rounds + 1):
        cases = [case for case in plan.cases if case.rounds >= round_no]
        if round_no > 1:
            random.Random(round_no).shuffle(cases)
        for case in cases:
            yield round_no, case


def _warms_up(plan: Plan, case: Case) -> bool:
    if case.setup.embedded:
        return True  # its first run starts a cold server
    return case.setup in (FLOOR, PLUGIN_DEFAULT) and _first_of_setup(plan, case)


def _first_of_setup(plan: Plan, case: Case) -> bool:
    """One warm-up per setup and workload: the plugin's at -n 2 (its cold run), the floor's."""
    wanted = "2" if case.setup == PLUGIN_DEFAULT else "0"
    same = [c for c in plan.cases if c.workload == case.workload and c.setup == case.setup]
    workers = [c.workers for c in same]
    return case.workers == (wanted if wanted in workers else workers[0])


def print_progress(index: int, total: int, run: RunResult) -> None:
    """One line per finished run: its time and outcome, with the log when it went wrong."""
    o = run.outcome
    what = f"{o.passed} passed" + (f", {o.failed} failed, {o.errors} errors" if not o.ok else "")
    if run.returncode not in (0, 1) or not o.passed:
        what += f"; exit {run.returncode}: {run.error} (log: {run.log})"
    print(f"[{index}/{total}] r{run.round} {run.case}: {run.wall:.2f} s ({what})", flush=True)


def run_plan(
    plan: Plan, ctx: Context, report: Callable[[int, int, RunResult], None]
) -> list[RunResult]:
    steps = list(schedule(plan))
    results = []
    for index, (round_no, case) in enumerate(steps, start=1):
        result = run_case(case, ctx, round_no)
        results.append(result)
        report(index, len(steps), result)
    return results
