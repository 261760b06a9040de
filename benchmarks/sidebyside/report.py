"""RESULTS.md and results.json: every figure with the conditions it was measured under."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .aggregate import CaseStats, phases
from .config import Plan, Setup, Workload
from .reuse import ReuseCheck
from .runner import RunResult
from .targets import Target

WORKERS = ("0", "2", "auto")
HOW = """\
- **function-level**: per test `CREATE DATABASE`, `alembic upgrade head` in-process
  (`command.upgrade` on a thread via `asyncio.to_thread`, since the async env.py calls
  `asyncio.run()`; the subprocess form costs ~0.6 s more per test), a new engine, then
  `DROP DATABASE ... WITH (FORCE)`.
- **session-level classic**: the session creates and migrates one database; per test a new
  engine and session, then one `TRUNCATE <every table> CASCADE` and `engine.dispose()`.
- **pytest-pgtemplate**: the `pg_session` fixture, `--pgtemplate-url` on the same server,
  `asyncio_default_test_loop_scope = session` (one row with the function loop scope);
  `rollback` runs the test's session inside an outer transaction (commits become savepoints).
- **pytest-postgresql**: `postgresql_noproc(load=[alembic upgrade])` migrates a template once per
  session and xdist worker; its `postgresql` fixture clones that template for every test and
  drops it after; the AsyncSession uses a `NullPool` engine as its README's SQLAlchemy example.
- **floor**: the same tests on one database migrated before the run, one pooled engine, no reset.

Every setup runs the same generated tests (each inserts a customer, an order and 1-4 lines
through an `AsyncSession`, queries inside the transaction, commits, queries again) as a real
`pytest` process; the wall time is the whole process, start-up and collection included.
"""


def cell(stats: CaseStats | None) -> str:
    if stats is None:
        return ""
    if stats.case.expect_failures or stats.failures:
        total = stats.case.workload.tests
        return f"**{stats.failures} of {total} failed/errored**"
    if len(stats.walls) == 1:
        return f"{stats.median:.2f} s (1 run)"
    return f"{stats.median:.2f} s ({stats.low:.2f}-{stats.high:.2f})"


def workload_table(plan: Plan, stats: dict[str, CaseStats], workload: Workload) -> list[str]:
    mine = [s for s in stats.values() if s.case.workload == workload]
    setups = sorted(dict.fromkeys(s.case.setup for s in mine), key=_row_rank)
    columns = [w for w in WORKERS if any(s.case.workers == w for s in mine)]
    names = {"0": "-n 0", "2": "-n 2", "auto": "-n auto (= 2 here)"}
    plugin = stats.get(f"{workload.key}/plugin-restore/n2")
    lines = [
        f"### {workload.label}",
        "",
        "| setup | " + " | ".join(names[w] for w in columns) + " | vs plugin `restore` -n 2 |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for setup in setups:
        row = [cell(stats.get(f"{workload.key}/{setup.key}/n{w}")) for w in columns]
        lines.append(
            f"| {setup.label} | "
            + " | ".join(row)
            + f" | {_ratio(stats, workload, setup, plugin)} |"
        )
    for failing in (s for s in mine if s.failures and s.error):
        lines += [
            "",
            f"{failing.case.setup.label} at -n {failing.case.workers}: "
            f"first error `{failing.error}`",
        ]
    if plugin and plugin.cold is not None:
        summary = plugin.cold_summary.line if plugin.cold_summary else ""
        lines += [
            "",
            f"First plugin run (template built, cold): {plugin.cold:.2f} s at -n 2. `{summary}`",
        ]
    return [*lines, ""]


ROW_ORDER = (
    "function",
    "classic",
    "pytest-postgresql",
    "plugin-restore",
    "plugin-truncate-all",
    "plugin-rollback",
    "plugin-recreate",
    "plugin-restore-fnloop",
    "plugin-restore-embedded",
    "floor",
)


def _row_rank(setup: Setup) -> int:
    """Baselines, then the plugin's rows, then the floor."""
    return ROW_ORDER.index(setup.key) if setup.key in ROW_ORDER else len(ROW_ORDER)


def _ratio(
    stats: dict[str, CaseStats], workload: Workload, setup: Setup, plugin: CaseStats | None
) -> str:
    if plugin is None or not plugin.walls:
        return ""
    for workers in ("2", "0"):
        other = stats.get(f"{workload.key}/{setup.key}/n{workers}")
        if other and other.walls and not other.failures and not math.isnan(other.median):
            return f"{other.median / plugin.median:.2f}x (at -n {workers})"
    return ""


def phase_table(stats: dict[str, CaseStats], workload: Workload, workers: str) -> list[str]:
    """Per-test setup/body/teardown for every setup, and the plugin's own phases."""
    lines = [
        f"Per test, median ms at -n {workers} ({workload.label}):",
        "",
        "| setup | test setup | test body | test teardown (reset) | server | template | "
        "worker clone (avg) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in stats.values():
        if s.case.workload != workload or s.case.workers != workers or s.failures:
            continue
        p = s.phases
        figures = [p["test_setup"], p["test_call"], p["test_teardown"], p["server"], p["template"]]
        figures.append(p["clone_avg"])
        lines.append(f"| {s.case.setup.label} | " + " | ".join(_ms(v) for v in figures) + " |")
    return [*lines, ""]


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def targets_section(targets: list[Target]) -> list[str]:
    marks = {True: "MET", False: "MISSED", None: "not measured"}
    return [f"- **{marks[t.met]}**: {t.name}: {t.detail}" for t in targets] + [""]


def reuse_section(reuse: ReuseCheck | None) -> list[str]:
    if reuse is None:
        return ["Not measured in this run.", ""]
    lines = []
    for label, run in (("first run", reuse.first), ("second run", reuse.second)):
        line = run.summary.line if run.summary else f"(no summary line; exit {run.returncode})"
        lines.append(f"- {label}: {run.wall:.2f} s wall, {run.outcome.passed} passed. `{line}`")
    if reuse.leftover_servers:
        lines.append(
            f"- a server was still running afterwards and was stopped: {reuse.leftover_servers}"
        )
    return [*lines, ""]


def markdown(
    data: dict[str, Any], plan: Plan, stats: dict[str, CaseStats], sections: dict[str, list[str]]
) -> str:
    head = [
        "# Benchmarks: pytest-pgtemplate side by side",
        "",
        *conditions(data, "the same for every setup except the plugin's own server row"),
        f"- up to {plan.rounds} interleaved round(s) after a warm-up round: every case once per "
        "round (round 1 in table order, later rounds shuffled with a fixed seed, so no setup "
        "always follows the same one), and an untimed `CHECKPOINT` before every run so no run "
        "pays for the disk writes the previous one left behind",
        "- cells: median (min-max) wall seconds of the whole `pytest` process (start-up, "
        "collection and xdist workers included)",
        "",
    ]
    body = ["## Wall time", ""]
    for workload in plan.workloads:
        body += workload_table(plan, stats, workload)
    return "\n".join(head + body + _joined(sections)) + "\n"


def conditions(data: dict[str, Any], server_note: str) -> list[str]:
    """Date, machine, server, packages, plugin source and command: what a figure depends on."""
    machine = data["machine"]
    server = machine["server"]
    source = data["plugin_source"]
    return [
        f"- date: {machine['date']}; total benchmark time {data['elapsed_s'] / 60:.1f} min",
        f"- machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"{machine['os']}, Python {machine['python']}; load average at start "
        f"{machine['load_avg_start']}, at end {machine['load_avg_end']}",
        f"- server: PostgreSQL {server['version']} at {data['server_url']} (stock settings: fsync "
        f"{server['fsync']}, synchronous_commit {server['synchronous_commit']}, shared_buffers "
        f"{server['shared_buffers']}), {server_note}",
        f"- packages: {', '.join(f'{k} {v}' for k, v in machine['packages'].items())}",
        f"- plugin source: git {source['git_head']} with {source['uncommitted_files']} uncommitted "
        f"file(s) in src/ (sha256 {source['src_sha256']}), copied at the start and put first on "
        "PYTHONPATH so every run measures the same code",
        f"- command: `{data['command']}`",
    ]


def _joined(sections: dict[str, list[str]]) -> list[str]:
    lines: list[str] = []
    for title, content in sections.items():
        lines += [f"## {title}", "", *content]
    return lines


def results_json(
    data: dict[str, Any], stats: dict[str, CaseStats], runs: list[RunResult], targets: list[Target]
) -> str:
    cases = [_case_json(s) for s in stats.values()]
    raw = [_run_json(r) for r in runs]
    return json.dumps(
        {**data, "cases": cases, "runs": raw, "targets": [asdict(t) for t in targets]}, indent=1
    )


def _case_json(stats: CaseStats) -> dict[str, Any]:
    case = stats.case
    return {
        "key": case.key,
        "workload": asdict(case.workload),
        "setup": case.setup.key,
        "label": case.setup.label,
        "workers": case.workers,
        "walls_s": [round(w, 3) for w in stats.walls],
        "median_s": None if not stats.walls else round(stats.median, 3),
        "cold_s": None if stats.cold is None else round(stats.cold, 3),
        "failures": stats.failures,
        "passed": stats.passed,
        "phases_ms": {k: None if v is None else round(v, 2) for k, v in stats.phases.items()},
        "plugin_summary": stats.summary.line if stats.summary else None,
        "first_error": stats.error,
    }


def _run_json(run: RunResult) -> dict[str, Any]:
    return {
        "case": run.case,
        "round": run.round,
        "wall_s": round(run.wall, 3),
        "returncode": run.returncode,
        "outcome": asdict(run.outcome),
        "plugin_summary": run.summary.line if run.summary else None,
        "first_error": run.error,
        "phases_ms": {
            k: None if v is None else round(v, 2)
            for k, v in phases([run.timings], [run.summary]).items()
        },
    }


def write(out: Path, text: str, payload: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "RESULTS.md").write_text(text)
    (out / "results.json").write_text(payload + "\n")
