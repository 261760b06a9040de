"""results.png: wall time per setup and worker count, log scale, the floor drawn as a line."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator

from .aggregate import CaseStats
from .config import Plan, Workload

SHORT = {
    "function": "function-level\n(create+migrate)",
    "classic": "session classic\n(TRUNCATE)",
    "pytest-postgresql": "pytest-\npostgresql",
    "plugin-restore": "pgtemplate\nrestore",
    "plugin-truncate-all": "pgtemplate\ntruncate-all",
    "plugin-rollback": "pgtemplate\nrollback",
    "plugin-recreate": "pgtemplate\nrecreate",
    "plugin-restore-fnloop": "pgtemplate\nfn loop",
    "plugin-restore-embedded": "pgtemplate\nown server",
}
WORKERS = {"0": ("-n 0", "#9ecae1"), "2": ("-n 2", "#2171b5"), "auto": ("-n auto (=2)", "#08306b")}
FLOOR_STYLE = {"0": ":", "2": "--"}


def draw(plan: Plan, stats: dict[str, CaseStats], path: Path) -> None:
    fig, axes = plt.subplots(
        len(plan.workloads), 1, figsize=(12, 4.2 * len(plan.workloads)), squeeze=False
    )
    for ax, workload in zip(axes[:, 0], plan.workloads, strict=True):
        _panel(ax, workload, [s for s in stats.values() if s.case.workload == workload])
    fig.suptitle("Wall time of a real pytest run (median of interleaved rounds; lower is better)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax: Axes, workload: Workload, stats: list[CaseStats]) -> None:
    setups = [k for k in SHORT if any(s.case.setup.key == k for s in stats)]
    width = 0.8 / len(WORKERS)
    for offset, workers in enumerate(WORKERS):
        for x, key in enumerate(setups):
            found = [s for s in stats if s.case.setup.key == key and s.case.workers == workers]
            if found:
                _bar(ax, x + (offset - 1) * width, width, found[0], WORKERS[workers][1])
    handles: list[object] = [Patch(color=color, label=label) for label, color in WORKERS.values()]
    for s in stats:
        if s.case.setup.key == "floor" and s.walls:
            handles.append(
                ax.axhline(
                    s.median,
                    color="#e6550d",
                    linestyle=FLOOR_STYLE.get(s.case.workers, "-."),
                    linewidth=1.4,
                    label=f"floor (no reset) -n {s.case.workers}: {s.median:.1f} s",
                )
            )
    _axes(ax, workload, stats, setups)
    ax.legend(handles=handles, fontsize=8, loc="upper right", ncols=2)


def _axes(ax: Axes, workload: Workload, stats: list[CaseStats], setups: list[str]) -> None:
    """Log scale with plain-second labels, room above the tallest bar for the legend."""
    walls = [w for s in stats for w in s.walls]
    ax.set_yscale("log")
    ax.set_ylim(min(walls) * 0.5, max(walls) * 6)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g} s"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xticks(range(len(setups)), [SHORT[k] for k in setups], fontsize=8.5)
    ax.set_ylabel("wall seconds (log scale)")
    ax.set_title(workload.label, fontsize=10, loc="left")
    ax.grid(axis="y", which="major", alpha=0.3)


def _bar(ax: Axes, x: float, width: float, stats: CaseStats, color: str) -> None:
    if stats.failures or not stats.walls:
        ax.text(
            x,
            0.03,
            f"{stats.failures}\nfailed",
            ha="center",
            va="bottom",
            fontsize=7,
            color="#a50f15",
            transform=ax.get_xaxis_transform(),
        )
        return
    ax.bar(
        x,
        stats.median,
        width,
        color=color,
        yerr=[[stats.median - stats.low], [stats.high - stats.median]],
        capsize=2,
        ecolor="#555",
    )
    ax.text(x, stats.high * 1.06, f"{stats.median:.1f}", ha="center", va="bottom", fontsize=7)
