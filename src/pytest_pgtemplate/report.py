"""What one process did, as typed events; how they cross xdist's boundary; the end-of-run line.

The chain's objects record what happened (a server used, a template built or reused, a worker
database cloned, a problem met) on the ``Report`` of the server they work on; the plugin sends
each worker's report to the controller through ``workeroutput``, which carries only plain
values: ``to_wire``/``from_wire`` are the one conversion, and tolerate another plugin version's
reports (unknown events are dropped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar


@dataclass(frozen=True)
class ServerUsed:
    text: str  # what it is and where, the password masked
    started_here: bool = False  # this process started the plugin's own server


@dataclass(frozen=True)
class TemplateReady:
    name: str
    built: bool
    seconds: float = 0.0
    source: str = ""  # ``built`` (migrated), ``archive`` (restored from pgtemplate_archive_dir)


@dataclass(frozen=True)
class WorkerCloned:
    seconds: float
    method: str  # how, and why: ``FILE_COPY, fsync off``
    tracking: str = ""  # Resetter.describe(): what the checks rely on


@dataclass(frozen=True)
class Problem:
    """What a sweep or clean-up could not do: shown at the end, never a test failure."""

    text: str


Event = ServerUsed | TemplateReady | WorkerCloned | Problem
_KINDS: dict[str, type[Event]] = {
    kind.__name__: kind for kind in (ServerUsed, TemplateReady, WorkerCloned, Problem)
}
E = TypeVar("E", ServerUsed, TemplateReady, WorkerCloned, Problem)


@dataclass
class Report:
    worker: str = ""
    events: list[Event] = field(default_factory=list)
    resets: int = 0
    checks_skipped: int = 0

    def record(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    @property
    def worth_reporting(self) -> bool:
        return bool(self.of(TemplateReady) or self.of(Problem))

    def to_wire(self) -> dict[str, Any]:
        events = [{"kind": type(e).__name__, **asdict(e)} for e in self.events]
        return {
            "worker": self.worker,
            "resets": self.resets,
            "checks_skipped": self.checks_skipped,
            "events": events,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Report:
        events: list[Event] = []
        for raw in data.get("events", []):
            kind = _KINDS.get(raw.get("kind", ""))
            if kind is not None:
                fields = {k: v for k, v in raw.items() if k in kind.__dataclass_fields__}
                events.append(kind(**fields))
        return cls(
            str(data.get("worker", "")),
            events,
            int(data.get("resets", 0)),
            int(data.get("checks_skipped", 0)),
        )


def summary_lines(reports: Sequence[Report], owner_note: str = "") -> list[str]:
    """The end-of-run lines: what the plugin did, then anything it could not do."""
    used = [r for r in reports if r.of(TemplateReady)]
    lines = [_summary(used, owner_note)] if used else []
    problems = dict.fromkeys(p.text for r in reports for p in r.of(Problem))
    return lines + [f"pgtemplate: warning: {problem}" for problem in problems]


def _summary(reports: Sequence[Report], owner_note: str) -> str:
    servers = [s for r in reports for s in r.of(ServerUsed)]
    started = [s.text for s in servers if s.started_here]
    server = owner_note or next(iter(started), servers[0].text if servers else "")
    template = reports[0].of(TemplateReady)[0].name
    made = [(r.worker, t) for r in reports for t in r.of(TemplateReady) if t.built]
    how = "reused (no migration ran)"
    if made:
        how = ", ".join(
            f"{'restored from archive' if t.source == 'archive' else 'built'} by {worker} in "
            f"{t.seconds:.2f} s"
            for worker, t in made
        )
    clones = [c for r in reports for c in r.of(WorkerCloned)]
    clone_ms = 1000 * sum(c.seconds for c in clones) / max(len(clones), 1)
    method = next((c.method for c in clones if c.method), "")
    tracking = next((f"; {c.tracking}" for c in clones if c.tracking), "")
    resets = sum(r.resets for r in reports)
    skipped = sum(r.checks_skipped for r in reports)
    direct = f" ({skipped} test(s) started right after one: no check before)" if skipped else ""
    return (
        f"pgtemplate: {server}; template {template} {how}; "
        f"{len(clones)} worker database(s) cloned (avg {clone_ms:.0f} ms"
        f"{', ' + method if method else ''}) and dropped; {resets} reset(s){direct}{tracking}"
    )
