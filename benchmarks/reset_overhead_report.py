"""The Markdown report of ``reset_overhead.py``: where and how it ran, its tables, its targets."""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

Samples = dict[tuple[int, str, str], list[float]]  # (tables, case, column) -> ms (setup: s)
DIRECT = "restore, right after a reset"
COMPARED = "restore, every sequence compared"
FROM_WAL = "restore, sequences from the WAL"
RESETS = (
    "restore",
    DIRECT,
    COMPARED,
    FROM_WAL,
    "rollback",
    "restore, no superuser",
    "rollback, no superuser",
)
CHECKS = ("check alone", "check alone, hot")
MODES = {"superuser": "restore", "no superuser": "restore, no superuser"}


def _git(*args: str) -> str:
    """Read-only: ``--no-optional-locks`` so the index is never locked under other editors."""
    done = subprocess.run(
        ["git", "--no-optional-locks", *args],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


@dataclass
class Meta:
    """Where and when the figures were taken; load twice, since it moves during a run."""

    server: str
    version: str
    fsync: bool
    own: bool
    began: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    samples: Samples = field(default_factory=dict)

    @classmethod
    def start(cls, url: str, version: str, fsync: bool, own: bool) -> Meta:
        parsed = make_url(url)
        where = f"{parsed.host}:{parsed.port or 5432}"
        return cls(where, version, fsync, own, time.perf_counter(), os.getloadavg())

    def finish(self) -> Meta:
        self.load_after = os.getloadavg()
        self.seconds = time.perf_counter() - self.began
        return self


def _masked(arg: str) -> str:
    """A --url's password stays out of the report."""
    return make_url(arg).render_as_string(hide_password=True) if "://" in arg else arg


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{each:.2f}" for each in load)


def header(meta: Meta, rounds: int) -> list[str]:
    commit = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain"):
        commit += " (working tree with uncommitted changes)"
    command = shlex.join(["benchmarks/reset_overhead.py", *map(_masked, sys.argv[1:])])
    cores = os.cpu_count() or 1
    busy = max(meta.load_before[0], meta.load_after[0]) > 0.5 * cores
    server = "the plugin's own server" if meta.own else "the server given by --url"
    return [
        "# Per-test reset overhead (issue 16)",
        "",
        f"- Command: `python {command}`",
        f"- Date: {datetime.now(UTC).isoformat(timespec='seconds')}; git commit {commit}",
        f"- PostgreSQL {meta.version}, {server} at {meta.server}, "
        f"fsync {'on' if meta.fsync else 'off'}",
        f"- Machine: {cores} cores; load (1 / 5 / 15 min) {_load(meta.load_before)} at the start,"
        f" {_load(meta.load_after)} at the end"
        + (": **a loaded machine** (other work competed), read the min figures" if busy else ""),
        f"- {rounds} rounds (after 5 warm-up rounds), cases and sizes interleaved; "
        f"wall time {meta.seconds:.0f} s",
        "",
    ]


def paired(samples: Samples, tables: int, case: str, column: str) -> list[float]:
    """Each round's figure minus the same round's floor: load drift cancels out."""
    floor = samples[(tables, case, "floor")]
    return [a - b for a, b in zip(samples[(tables, case, column)], floor, strict=True)]


def cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    mid = statistics.median(values)
    return f"{min(values):.{digits}f} / {mid:.{digits}f} / {max(values):.{digits}f}"


def per_test(samples: Samples, tables: list[int], cases: list[str]) -> list[str]:
    lines = [
        "## What a test pays: ms over the floor, min / median / max",
        "",
        "Floor: the same body on a clone of a template without tracking, no reset at all (its "
        "median in ms shown). restore = ensure_pristine() + body + reset('restore'); rollback = "
        "ensure_pristine() + the body in an outer transaction, ROLLBACK, reset('rollback') (the "
        "plugin runs the check before every test, whatever the strategy); restore, right after a "
        "reset = body + reset('restore'): a test that directly follows another's reset, with no "
        "test or fixture run in between, starts without the check. Each figure is one "
        "round's run minus the same round's floor, so noise can make a min negative. The plugin's "
        "connection idles while a test runs, so its calls meet a backend that must wake up: see "
        "the check alone, cold and hot, below.",
        "",
        f"| case | tables | floor ms | {' | '.join(RESETS)} |",
        "|---|---|---|" + "---|" * len(RESETS),
    ]
    for case in cases:
        for size in tables:
            if (size, case, "floor") not in samples:
                continue
            floor = statistics.median(samples[(size, case, "floor")])
            cells = [cell(paired(samples, size, case, column)) for column in RESETS]
            lines.append(f"| {case} | {size} | {floor:.2f} | {' | '.join(cells)} |")
    return [*lines, ""]


def checks(samples: Samples, tables: list[int]) -> list[str]:
    lines = [
        "## The check alone, nothing changed: ms, min / median / max",
        "",
        "ensure_pristine() on an unchanged clone (the schema-change check is part of it): first "
        "on a connection idle since its last use, as in a suite (the backend must wake up), then "
        "hot, right after that call (the server's work and one round trip).",
        "",
        "| tables | superuser | superuser, hot | no superuser | no superuser, hot |",
        "|---|---|---|---|---|",
    ]
    for size in tables:
        keys = [(size, case, column) for column in MODES.values() for case in CHECKS]
        lines.append(f"| {size} | {' | '.join(cell(samples[key], 3) for key in keys)} |")
    return [*lines, ""]


def setups(samples: Samples, tables: list[int]) -> list[str]:
    lines = [
        "## A worker's setup, once per worker: s, min / median / max",
        "",
        "The plugin's clone (CREATE DATABASE ... TEMPLATE, marker, settings) alone, and the "
        "clone + open_resetter(); the last column is open_resetter's own share of the latter.",
        "",
        "| tables | clone | clone + open_resetter | open_resetter |",
        "|---|---|---|---|",
    ]
    for size in tables:
        what = ("clone", "clone + open_resetter", "open_resetter")
        cells = [cell(samples.get((size, "setup", each), []), 3) for each in what]
        lines.append(f"| {size} | {' | '.join(cells)} |")
    return [*lines, ""]


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else "**met**" if ok else "**missed**"


def _median(samples: Samples, size: int, case: str, column: str) -> float | None:
    if (size, case, column) not in samples:
        return None
    return statistics.median(paired(samples, size, case, column))


def bound(samples: Samples, tables: list[int], case: str, column: str, limit: float) -> str:
    found = {size: _median(samples, size, case, column) for size in tables}
    shown = ", ".join(f"{size}: {ms:.2f}" for size, ms in found.items() if ms is not None)
    ok = all(ms is not None and ms <= limit for ms in found.values()) if tables else None
    return f"{_verdict(ok)} ({shown})" if shown else _verdict(ok)


def ratio(samples: Samples, case: str, column: str) -> str:
    small, big = _median(samples, 10, case, column), _median(samples, 1000, case, column)
    if small is None or big is None:
        return _verdict(None)
    ratio = big / small if small > 0 else float("inf")
    return f"{_verdict(ratio <= 1.5)} ({big:.2f} / {small:.2f} = {ratio:.2f}x)"


def targets(samples: Samples, tables: list[int]) -> list[str]:
    """Medians against the issue's targets, judged for each mode apart."""
    lines = ["## Targets (medians; set for a quiet machine)", ""]
    judged = {**MODES, "superuser, a test right after another's reset": DIRECT}
    for mode, column in judged.items():
        lines += [
            f"Restore, {mode}:",
            "",
            "- nothing changed, <= 0.5 ms over the floor at any size: "
            + bound(samples, tables, "nothing changed", column, 0.5),
            "- 3 tables changed, <= 1.0 ms at 200 tables: "
            + bound(samples, [t for t in tables if t == 200], "3 tables", column, 1.0),
            "- 3 tables changed, <= 1.5 ms at 1000 tables: "
            + bound(samples, [t for t in tables if t == 1000], "3 tables", column, 1.5),
            "- 1000 tables at most 1.5x 10 tables, nothing changed: "
            + ratio(samples, "nothing changed", column),
            "- 1000 tables at most 1.5x 10 tables, 3 tables changed: "
            + ratio(samples, "3 tables", column),
            "",
        ]
    lines += ["The check, and a worker's setup:", ""]
    for mode, column in MODES.items():
        for case in CHECKS:
            found = [statistics.median(samples[(size, case, column)]) for size in tables]
            shown = ", ".join(f"{size}: {ms:.3f}" for size, ms in zip(tables, found, strict=True))
            lines.append(
                f"- {case}, {mode}, <= 0.2 ms at any size: "
                f"{_verdict(all(ms <= 0.2 for ms in found))} ({shown})"
            )
    share = samples.get((1000, "setup", "open_resetter"))
    verdict = _verdict(None if not share else statistics.median(share) <= 0.2)
    detail = f" ({statistics.median(share):.3f} s)" if share else ""
    lines += [
        f"- worker setup at 1000 tables, clone + <= 0.2 s (open_resetter): {verdict}{detail}",
        "",
    ]
    return lines


def report(meta: Meta, tables: list[int], rounds: int, cases: list[str]) -> str:
    samples = meta.samples
    parts = [
        header(meta, rounds),
        per_test(samples, tables, cases),
        checks(samples, tables),
        setups(samples, tables),
        targets(samples, tables),
    ]
    return "\n".join(line for part in parts for line in part)
