"""From runs to figures: per case the median, min and max wall time, failures, and phases."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Case
from .parse import PluginSummary, Timings
from .runner import RunResult

PER_TEST_FIXTURES = ("pg_database", "pg_engine", "pg_session", "db", "bench_postgresql")


@dataclass
class CaseStats:
    case: Case
    walls: list[float]
    cold: float | None
    failures: int
    passed: int
    summary: PluginSummary | None
    cold_summary: PluginSummary | None
    phases: dict[str, float | None] = field(default_factory=dict)
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def low(self) -> float:
        return min(self.walls) if self.walls else float("nan")

    @property
    def high(self) -> float:
        return max(self.walls) if self.walls else float("nan")


def case_stats(case: Case, results: list[RunResult]) -> CaseStats:
    mine = [r for r in results if r.case == case.key]
    timed = [r for r in mine if r.round > 0]
    cold = next((r for r in mine if r.round == 0), None)
    expected = case.tests_run
    failures = max((expected - r.outcome.passed for r in timed), default=0)
    return CaseStats(
        case=case,
        walls=[r.wall for r in timed],
        cold=cold.wall if cold else None,
        failures=failures,
        passed=min((r.outcome.passed for r in timed), default=0),
        summary=timed[-1].summary if timed else None,
        cold_summary=cold.summary if cold else None,
        phases=phases([r.timings for r in timed], [r.summary for r in timed]),
        error=next((r.error for r in timed if r.error), ""),
    )


def phases(
    timings: list[Timings], summaries: list[PluginSummary | None]
) -> dict[str, float | None]:
    """Milliseconds; medians over the runs of per-run figures (session fixtures: slowest worker)."""

    def over_runs(figure: Callable[[Timings], float | None]) -> float | None:
        values = [v for v in (figure(t) for t in timings) if v is not None]
        return statistics.median(values) if values else None

    result: dict[str, float | None] = {
        "test_setup": over_runs(lambda t: t.median_ms("setup")),
        "test_call": over_runs(lambda t: t.median_ms("call")),
        "test_teardown": over_runs(lambda t: t.median_ms("teardown")),
        "server": over_runs(lambda t: t.fixture_ms("pg_server", "max")),
        "template": over_runs(lambda t: t.fixture_ms("pg_template", "max")),
        "worker_db": over_runs(lambda t: t.fixture_ms("pg_worker_database", "max")),
    }
    for name in PER_TEST_FIXTURES:
        result[f"fixture_{name}"] = over_runs(_fixture_median(name))
    clone = [s.clone_ms for s in summaries if s is not None and s.clones]
    result["clone_avg"] = statistics.median(clone) if clone else None
    return result


def _fixture_median(name: str) -> Callable[[Timings], float | None]:
    return lambda t: t.fixture_ms(name)


def all_stats(cases: tuple[Case, ...], results: list[RunResult]) -> dict[str, CaseStats]:
    return {case.key: case_stats(case, results) for case in cases}
