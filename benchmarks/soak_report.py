"""Reading the soak's traces back: phases at each kill, builds, failures, wrong drops.

The scratch projects' ``conftest.py`` appends JSON lines to three files (events, failures,
incidents), each line tagged with the run's label (``r3s5``: round 3, slot 5; ``live``;
``sweep``), the process id and the wall-clock time, so everything is attributed to one run.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak_db import OwnDatabase

PHASES = (
    "start-up (no xdist worker configured yet)",
    "sweep / waiting for the template / cloning",
    "template build (migration running)",
    "tests",
    "teardown (dropping its databases)",
)
_PHASE_OF_EVENT = {"configure": 1, "build": 2, "cloned": 3, "teardown": 4}

# What a test sees when its database is dropped under it (asyncpg, psycopg, SQLAlchemy).
DROP_SIGNS = (
    "does not exist",
    "connection was closed",
    "terminating connection",
    "ConnectionDoesNotExist",
    "InvalidCatalogName",
    "administrator command",
    "server closed the connection",
)


@dataclass
class RunRecord:
    label: str
    round: int
    started: float
    output: Path
    killed_at: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    hung: bool = False


@dataclass
class Traces:
    events: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, events: Path, failures: Path, incidents: Path) -> Traces:
        return cls(_lines(events), _lines(failures), _lines(incidents))

    def run_ids(self) -> set[str]:
        return {e["run_id"] for e in self.events if e["event"] == "configure"}

    def templates(self) -> set[str]:
        return {e["template"] for e in self.events if e["event"] == "cloned"}

    def of(self, label: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["label"] == label]


def _lines(path: Path) -> list[dict[str, Any]]:
    """A SIGKILL can cut a line short: a line that does not parse is skipped."""
    if not path.exists():
        return []
    parsed = []
    for line in path.read_text().splitlines():
        try:
            parsed.append(json.loads(line))
        except ValueError:
            continue
    return parsed


def phase_at_kill(traces: Traces, run: RunRecord) -> str:
    """The furthest phase any of the run's processes had reached when the SIGKILL landed."""
    assert run.killed_at is not None
    reached = [
        _PHASE_OF_EVENT[e["event"]]
        for e in traces.of(run.label)
        if e["t"] <= run.killed_at and e["worker"] != "controller"  # a worker's own phase
    ]
    return PHASES[max(reached, default=0)]


def interrupted_builds(traces: Traces, runs: list[RunRecord]) -> int:
    """Builds whose process was SIGKILLed before it cloned: rebuilding after them is right."""
    killed = {run.label: run.killed_at for run in runs if run.killed_at is not None}
    count = 0
    for build in (e for e in traces.events if e["event"] == "build"):
        cloned = any(
            e["event"] == "cloned" and e["pid"] == build["pid"] for e in traces.of(build["label"])
        )
        count += build["label"] in killed and not cloned
    return count


def drop_suspects(traces: Traces, live_label: str) -> dict[tuple[str, str], list[str]]:
    """Worker databases that vanished under their run: every live-run failure, and any run's
    failure or incident with a dropped database's signature. Keyed by (run label, xdist worker)."""
    suspects: dict[tuple[str, str], list[str]] = {}
    for item in [*traces.failures, *traces.incidents]:
        text = item.get("error") or "; ".join(item.get("problems", []))
        if item["label"] == live_label or any(sign in text for sign in DROP_SIGNS):
            suspects.setdefault((item["label"], item["worker"]), []).append(
                f"{item.get('test', item.get('database', ''))}: {_last_line(text)}"
            )
    return suspects


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def kill_phases(traces: Traces, runs: list[RunRecord]) -> Counter[str]:
    return Counter(phase_at_kill(traces, run) for run in runs if run.killed_at is not None)


def failure_lines(traces: Traces) -> list[str]:
    return [
        f"{f['label']} {f['worker']} {f['when']} {f['test']}: {_last_line(f['error'])}"
        for f in traces.failures
    ]


@dataclass
class Findings:
    """What the traces and the server say once every run has ended."""

    runs: list[RunRecord]
    traces: Traces
    own: list[OwnDatabase]
    live: RunRecord
    sweep: RunRecord
    covered: bool
    """The live run was still running when the last round ended."""
    wall: float
    before_sweep: list[str] = field(default_factory=list)
    """The soak's databases left by killed runs that no run had swept yet when the rounds ended."""
    suspects: dict[tuple[str, str], list[str]] = field(init=False)
    leaked: list[OwnDatabase] = field(init=False)
    failed: list[RunRecord] = field(init=False)
    builds: int = field(init=False)
    interrupted: int = field(init=False)

    def __post_init__(self) -> None:
        self.suspects = drop_suspects(self.traces, self.live.label)
        kept = [d for d in self.own if d.finished_template][:1]  # the reusable template
        self.leaked = [d for d in self.own if d not in kept]
        runs = self.runs
        self.failed = [r for r in runs if r.killed_at is None and (r.exit_code != 0 or r.hung)]
        self.builds = sum(e["event"] == "build" for e in self.traces.events)
        self.interrupted = interrupted_builds(self.traces, runs)

    def on_target(self) -> bool:
        clean = not (self.suspects or self.traces.incidents or self.failed or self.leaked)
        return clean and self.covered and self.builds - self.interrupted == 1


def print_table(found: Findings, title: str) -> None:
    short = [r for r in found.runs if r.round > 0]
    phases = kill_phases(found.traces, short)
    rows = [
        ("short runs / live run / final sweep run", f"{len(short)} / 1 / 1"),
        (
            "SIGKILLs (whole process group, random moment)",
            sum(r.killed_at is not None for r in short),
        ),
        *((f"- killed during {phase}", phases.get(phase, 0)) for phase in PHASES),
        ("live run still running when the last round ended", "yes" if found.covered else "NO"),
        ("wrong drops (target 0)", len(found.suspects)),
        ("wrong-database or not-clean incidents (target 0)", len(found.traces.incidents)),
        ("runs not killed that failed or hung (target 0)", len(found.failed)),
        ("killed runs' databases not yet swept when the rounds ended", len(found.before_sweep)),
        ("leaked databases after the final sweep run (target 0)", len(found.leaked)),
        ("template builds for the one fingerprint (target 1)", found.builds - found.interrupted),
        ("- more builds, after a builder was SIGKILLed mid-build", found.interrupted),
        ("wall time", f"{found.wall:.0f} s"),
    ]
    print(f"\n| {title} | result |")
    print("|---|---|")
    for measure, result in rows:
        print(f"| {measure} | {result} |")


def print_details(found: Findings) -> None:
    """Everything needed to tell what went wrong, with each run's own words."""
    print(f"\nlive run, last lines:\n{tail(found.live.output, 3)}")
    print(f"sweep run, last lines:\n{tail(found.sweep.output, 3)}")
    for (label, worker), lines in found.suspects.items():
        print(f"\nWRONG DROP? run {label} worker {worker}:\n  " + "\n  ".join(lines[:5]))
    for database in found.leaked:
        print(f"LEAKED: {database.name} ({database.kind})")
    for record in found.failed:
        print(f"\nFAILED {record.label} (exit {record.exit_code}, hung {record.hung}):")
        print(tail(record.output, 25))
    for line in failure_lines(found.traces)[:40]:
        print(f"failure: {line}")
    for incident in found.traces.incidents[:20]:
        print(f"incident: {incident}")


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
