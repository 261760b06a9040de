"""Read what a pytest run printed and recorded: outcome counts, the plugin's summary, timings."""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b")
# "... N reset(s)", and since 499dfa6 perhaps " (M test(s) started right after one: ...)"
_SUMMARY = re.compile(
    r"^pgtemplate: .*\d reset\(s\)(?: \(.*\))?(?:; change tracking: .*)?\s*$", re.MULTILINE
)
_BUILT = re.compile(r"built by (.+?); ")
_BUILD_SECONDS = re.compile(r"in ([\d.]+) s")
_CLONES = re.compile(r"(\d+) worker database\(s\) cloned \(avg (\d+) ms[,)]")
_RESETS = re.compile(r"(\d+) reset\(s\)")
_START = re.compile(r"(warm|cold) start in ([\d.]+) s")


@dataclass
class Outcome:
    passed: int = 0
    failed: int = 0
    errors: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0 and self.passed > 0


@dataclass
class PluginSummary:
    """The plugin's closing line, e.g. ``template ... built by gw1 in 0.24 s; 2 ... cloned``."""

    line: str
    built: bool
    build_seconds: float
    clones: int
    clone_ms: float
    resets: int
    start: str = ""
    start_seconds: float | None = None


@dataclass
class Timings:
    """Per-test phase durations and per-fixture setup durations (seconds), all workers."""

    setup: list[float] = field(default_factory=list)
    call: list[float] = field(default_factory=list)
    teardown: list[float] = field(default_factory=list)
    fixtures: dict[str, list[float]] = field(default_factory=dict)

    def median_ms(self, phase: str) -> float | None:
        values: list[float] = getattr(self, phase)
        return 1000 * statistics.median(values) if values else None

    def fixture_ms(self, name: str, how: str = "median") -> float | None:
        values = self.fixtures.get(name)
        if not values:
            return None
        return 1000 * (max(values) if how == "max" else statistics.median(values))


def outcome(output: str) -> Outcome:
    """Counts from pytest's last ``=== N passed, M failed ... ===`` line."""
    counts: dict[str, int] = {}
    lines = [line for line in output.splitlines() if _COUNTS.search(line) and " in " in line]
    for number, word in _COUNTS.findall(lines[-1] if lines else ""):
        counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    return Outcome(counts.get("passed", 0), counts.get("failed", 0), counts.get("error", 0))


def plugin_summary(output: str) -> PluginSummary | None:
    found = _SUMMARY.findall(output)
    if not found:
        return None
    line = found[-1]
    built = _BUILT.search(line)
    build_seconds = sum(float(s) for s in _BUILD_SECONDS.findall(built.group(1))) if built else 0.0
    clones = _CLONES.search(line)
    resets = _RESETS.search(line)
    start = _START.search(line)
    return PluginSummary(
        line=line,
        built=built is not None,
        build_seconds=build_seconds,
        clones=int(clones.group(1)) if clones else 0,
        clone_ms=float(clones.group(2)) if clones else 0.0,
        resets=int(resets.group(1)) if resets else 0,
        start=start.group(1) if start else "",
        start_seconds=float(start.group(2)) if start else None,
    )


def timings(directory: Path) -> Timings:
    """Merge the ``timing`` plugin's JSON files of one run (one per worker)."""
    result = Timings()
    fixtures: dict[str, list[float]] = defaultdict(list)
    for path in sorted(directory.glob("*.json")):
        data: dict[str, Any] = json.loads(path.read_text())
        for test in data["tests"]:
            getattr(result, test["when"]).append(test["s"])
        for fixture in data["fixtures"]:
            fixtures[fixture["name"]].append(fixture["s"])
    result.fixtures = dict(fixtures)
    return result


def first_error(output: str) -> str:
    """The first ``E   ...`` line pytest printed (else the last error line): why a run failed."""
    lines = output.splitlines()
    for line in lines:
        if line.startswith("E   "):
            return line[4:].strip()[:200]
    crashed = [line for line in lines if "Error" in line]
    return crashed[-1].strip()[:200] if crashed else ""
