"""What one process did (the run report), how it crosses xdist's boundary, and the summary line.

Workers send their report to the controller through ``workeroutput``, which carries only plain
values: ``to_wire``/``from_wire`` are the one explicit conversion, and tolerate reports of
another plugin version (unknown keys are dropped, missing ones take defaults).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Report:
    worker: str = ""
    server: str = ""
    server_started: bool = False
    """This process started the plugin's own server: its note has the start-up figures."""
    template: str = ""
    built: bool = False
    build_seconds: float = 0.0
    clone_method: str = ""
    """How worker databases were cloned and why, e.g. ``FILE_COPY (fsync off)``."""
    clone_seconds: float = 0.0
    clones: int = 0
    resets: int = 0
    swept: int = 0
    problems: list[str] = field(default_factory=list)
    """What a sweep or clean-up could not do: shown at the end, never a test failure."""

    @property
    def worth_reporting(self) -> bool:
        return bool(self.template or self.problems)

    def to_wire(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Report:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def summary_lines(reports: Sequence[Report], owner_note: str) -> list[str]:
    """The end-of-run lines: what the plugin did, then anything it could not do."""
    used = [r for r in reports if r.template]
    lines = [_summary(used, owner_note)] if used else []
    problems = dict.fromkeys(p for r in reports for p in r.problems)
    return lines + [f"pgtemplate: warning: {problem}" for problem in problems]


def _summary(reports: Sequence[Report], owner_note: str) -> str:
    builders = [r for r in reports if r.built]
    starters = [r.server for r in reports if r.server_started]
    server = owner_note or next(iter(starters), reports[0].server)
    if builders:
        how = "built by " + ", ".join(f"{r.worker} in {r.build_seconds:.2f} s" for r in builders)
    else:
        how = "reused (no migration ran)"
    clones = sum(r.clones for r in reports)
    clone_ms = 1000 * sum(r.clone_seconds for r in reports) / max(clones, 1)
    method = next((r.clone_method for r in reports if r.clone_method), "")
    resets = sum(r.resets for r in reports)
    return (
        f"pgtemplate: {server}; template {reports[0].template} {how}; "
        f"{clones} worker database(s) cloned (avg {clone_ms:.0f} ms"
        f"{', ' + method if method else ''}) and dropped; {resets} reset(s)"
    )
