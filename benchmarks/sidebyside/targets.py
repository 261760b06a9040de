"""The issue's targets, evaluated on ratios within one run (default workload)."""

from __future__ import annotations

from dataclasses import dataclass

from .aggregate import CaseStats
from .config import Workload
from .reuse import SETUP_BUDGET_S, ReuseCheck


@dataclass(frozen=True)
class Target:
    name: str
    met: bool | None
    """None: not measured in this run (e.g. a quick run without that setup)."""
    detail: str


def evaluate(
    stats: dict[str, CaseStats], default: Workload, reuse: ReuseCheck | None
) -> list[Target]:
    def median(setup: str, workers: str) -> float | None:
        found = stats.get(f"{default.key}/{setup}/n{workers}")
        return found.median if found and found.walls and not found.failures else None

    plugin = median("plugin-restore", "2")
    return [
        _ratio("≥10x faster than function-level (-n 2)", median("function", "2"), plugin, 10),
        _ratio("faster than session-level classic at -n 0", median("classic", "0"), plugin, 1),
        _ratio(
            "≥3x faster than pytest-postgresql (-n 2)", median("pytest-postgresql", "2"), plugin, 3
        ),
        _floor(median("floor", "2"), plugin),
        _reuse(reuse),
    ]


def _ratio(name: str, other: float | None, plugin: float | None, wanted: float) -> Target:
    if other is None or plugin is None:
        return Target(name, None, "not measured in this run")
    ratio = other / plugin
    met = ratio >= wanted if wanted > 1 else plugin < other
    return Target(name, met, f"{other:.2f} s vs {plugin:.2f} s: {ratio:.1f}x")


def _floor(floor: float | None, plugin: float | None) -> Target:
    name = "within 1.3x of the floor (-n 2)"
    if floor is None or plugin is None:
        return Target(name, None, "not measured in this run")
    ratio = plugin / floor
    return Target(name, ratio <= 1.3, f"{plugin:.2f} s vs floor {floor:.2f} s: {ratio:.2f}x")


def _reuse(reuse: ReuseCheck | None) -> Target:
    name = f"second run: zero migrations, setup < {SETUP_BUDGET_S} s (own server, warm)"
    if reuse is None:
        return Target(name, None, "not measured in this run")
    summary = reuse.second.summary
    seconds = reuse.setup_seconds
    migrated = "migrated again" if reuse.migrated_again else "no migration ran"
    if summary is None or seconds is None:
        return Target(name, False, f"no plugin summary line in the second run ({migrated})")
    template_ms = 1000 * seconds - 1000 * (summary.start_seconds or 0) - summary.clone_ms
    detail = (
        f"{migrated}; {seconds:.2f} s = server {summary.start} start "
        f"{summary.start_seconds:.2f} s + template lookup {template_ms:.0f} ms "
        f"+ clone {summary.clone_ms:.0f} ms"
    )
    return Target(name, reuse.met, detail)
