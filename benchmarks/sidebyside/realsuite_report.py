"""REAL_SUITE.md: the real-suite shape's table, every ratio taken within one run.

A setup that ran only a sample of the tests (function-level) gets its total extrapolated:
the sample's measured wall time plus, for every test it did not run, the sample's mean
per-test time (setup + body + teardown) divided by the number of workers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from .config import PER_WORKER_DELETE, PLUGIN_DEFAULT, PLUGIN_ROLLBACK, Case, Plan
from .report import conditions
from .runner import RunResult

WORKERS = 2


@dataclass(frozen=True)
class Row:
    label: str
    tests_run: int
    walls: list[float]
    total: float
    """Seconds for the whole suite: measured, or extrapolated from a sample."""
    extrapolated: bool
    cold: bool
    """The plugin's warm-up run, which builds its template."""
    db_ms: float | None
    """Median per-test database work: the test's setup plus its teardown, ms."""
    failures: int
    error: str
    summary: str
    """The plugin's closing line (template built or reused, clones, resets), if any."""


def rows(plan: Plan, runs: list[RunResult]) -> list[Row]:
    """The plugin first (warm, then its first run), then the baselines, cheapest first."""
    plugin = next(c for c in plan.cases if c.setup == PLUGIN_DEFAULT)
    cold = _row(plugin, runs, cold=True)
    others = [_row(c, runs, cold=False) for c in reversed(plan.cases) if c != plugin]
    return [_row(plugin, runs, cold=False), *([cold] if cold.walls else []), *others]


def _row(case: Case, runs: list[RunResult], *, cold: bool) -> Row:
    mine = [r for r in runs if r.case == case.key and (r.round == 0) == cold]
    walls = [r.wall for r in mine]
    wall = statistics.median(walls) if walls else float("nan")
    per_test = [_per_test(r) for r in mine]
    missing = case.workload.tests - case.tests_run
    total = wall + missing * statistics.median(per_test) / WORKERS if missing and mine else wall
    label = case.setup.label + (", first run (template built in the run)" if cold else "")
    return Row(
        label=label,
        tests_run=case.tests_run,
        walls=walls,
        total=total,
        extrapolated=bool(missing),
        cold=cold,
        db_ms=_db_ms(mine),
        failures=max((case.tests_run - r.outcome.passed for r in mine), default=0),
        error=next((r.error for r in mine if r.error), ""),
        summary=next((r.summary.line for r in mine if r.summary), ""),
    )


def _per_test(run: RunResult) -> float:
    """Mean seconds a worker spends on one test, all phases."""
    t = run.timings
    count = len(t.call) or 1
    return (sum(t.setup) + sum(t.call) + sum(t.teardown)) / count


def _db_ms(runs: list[RunResult]) -> float | None:
    values = []
    for run in runs:
        setup, teardown = run.timings.median_ms("setup"), run.timings.median_ms("teardown")
        if setup is not None and teardown is not None:
            values.append(setup + teardown)
    return statistics.median(values) if values else None


def table(plan: Plan, found: list[Row]) -> list[str]:
    """``found`` as ``rows`` orders it: the plugin's warm row first."""
    tests = plan.default.tests
    plugin, cold = found[0], next((r for r in found if r.cold), None)
    lines = [
        f"| setup | tests run | wall, measured | wall for {tests:,} tests | wall per test | "
        "per-test db setup + teardown (median) | vs plugin | vs plugin's first run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in found:
        if row.failures:
            lines.append(f"| {row.label} | {row.tests_run:,} | **{row.failures} failed** |||||")
            continue
        total = f"{row.total:.1f} s" + (
            f" (extrapolated from {row.tests_run:,})" * row.extrapolated
        )
        cells = [row.label, f"{row.tests_run:,}", _walls(row), total]
        cells += [f"{1000 * row.total / tests:.1f} ms", _ms(row.db_ms)]
        cells += [_ratio(row, plugin), _ratio(row, cold)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _walls(row: Row) -> str:
    if len(row.walls) == 1:
        return f"{row.walls[0]:.1f} s (1 run)"
    return f"{statistics.median(row.walls):.1f} s ({min(row.walls):.1f}-{max(row.walls):.1f})"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} ms"


def _ratio(row: Row, base: Row | None) -> str:
    if base is None or base.failures or not base.walls:
        return ""
    return f"{row.total / base.total:.2f}x"


def markdown(data: dict[str, Any], plan: Plan, runs: list[RunResult]) -> str:
    found = rows(plan, runs)
    workload = plan.default
    head = [
        "# Real-suite shape: pytest-pgtemplate side by side",
        "",
        *conditions(data, "the same server for every setup"),
        f"- suite: {workload.tests:,} async SQLAlchemy tests, {workload.tables} tables, "
        f"{workload.migrations} alembic migrations (the last one seeds 8 tables); a quarter of "
        "the tests commit changes to seed rows (update, delete, add children) after checking "
        "them pristine, the rest insert and commit rows of their own; `-n 2`",
        f"- runs: {'; '.join(plan.cuts)} A warm-up run of the plugin builds its template (the "
        "'first run' row); cells are the wall time of the whole `pytest` process, median "
        "(min-max)",
        "",
    ]
    return "\n".join([*head, *table(plan, found), *_notes(found), *targets(found)]) + "\n"


def targets(found: list[Row]) -> list[str]:
    """Issue 16's two targets for this suite, judged on the warm medians of this run."""
    plugin = found[0]
    delete = next((r for r in found if r.label == PER_WORKER_DELETE.label), None)
    floor = next((r for r in found if r.label == PLUGIN_ROLLBACK.label), None)
    lines = ["Targets (issue 16), wall medians of this run:", ""]
    if delete is not None and not delete.failures:
        ratio = delete.total / plugin.total
        verdict = "MET" if ratio >= 3 else "MISSED"
        lines.append(f"- **{verdict}**: >= 3x faster than per-worker DELETE-all: {ratio:.2f}x")
    if floor is not None and not floor.failures:
        ratio = plugin.total / floor.total
        verdict = "MET" if ratio <= 1.2 else "MISSED"
        lines.append(f"- **{verdict}**: within 1.2x of the floor (`rollback`): {ratio:.2f}x")
    return [*lines, ""] if len(lines) > 2 else []


def _notes(found: list[Row]) -> list[str]:
    notes = [f"- {row.label}: first error `{row.error}`" for row in found if row.failures]
    extrapolated = [row for row in found if row.extrapolated]
    notes += [
        f"- {row.label}: only its first {row.tests_run:,} tests ran; its total adds, for each "
        "test not run, the sample's mean time per test over the 2 workers. Not measured."
        for row in extrapolated
    ]
    notes += [
        f"- {row.label}: one warm-up run before the interleaved rounds, so it also meets the "
        "machine as it was at the start; what the plugin did once in it (template build, "
        f"clones) is in its own summary: `{row.summary}`"
        for row in found
        if row.cold and row.summary
    ]
    return [*notes, ""] if notes else []
