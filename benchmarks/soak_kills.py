"""When the soak SIGKILLs a run: random moments, aimed at each phase of a run's life.

Killing at a uniformly random time mostly hits start-up and the end of a run (on 2 busy cores a
short run spends seconds importing and seconds shutting down, and well under a second cloning
and testing). So each victim gets one of five kinds of trigger: a random moment in start-up,
a random delay after its first worker is configured (sweep, template wait, clone), after its
first database is cloned (tests), after its first worker starts tearing down, or any moment of
its expected life. And the first short run seen building the template in round 1 is killed
mid-build, so that a half-built template is left for the others to deal with.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# kind -> (worker event that starts the clock, or "" for the run's start; delay range in s)
TRIGGERS: dict[str, tuple[str, tuple[float, float]]] = {
    "start-up": ("", (0.05, 5.0)),
    "clone": ("configure", (0.0, 1.5)),
    "tests": ("cloned", (0.0, 0.6)),
    "teardown": ("teardown", (0.0, 2.0)),
}
BUILD_KILL_DELAY = (0.2, 0.9)
"""After the build event: the counting migration sleeps 1 s, so this lands mid-build."""


@dataclass
class EventTail:
    """New complete lines of the append-only events file, each read once."""

    path: Path
    offset: int = 0

    def new(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


@dataclass
class KillPlan:
    """Which runs of a round die, and when (wall-clock times, armed as their events arrive)."""

    rng: random.Random
    triggers: dict[str, tuple[str, float]]
    """label -> (worker event to wait for, "" for the start; delay after it)."""
    kill_builder: bool
    armed: dict[str, float] = field(default_factory=dict)

    @classmethod
    def choose(
        cls, rng: random.Random, labels: list[str], estimate: float, *, kill_builder: bool
    ) -> KillPlan:
        """One to half of ``labels`` die; ``estimate``: a short run's usual length in s."""
        kinds = {**TRIGGERS, "any time": ("", (0.05, 1.1 * estimate))}
        triggers = {}
        for label in rng.sample(labels, rng.randint(1, max(1, len(labels) // 2))):
            event, (low, high) = kinds[rng.choice(sorted(kinds))]
            triggers[label] = (event, rng.uniform(low, high))
        return cls(rng, triggers, kill_builder)

    def started(self, label: str, at: float) -> None:
        event, delay = self.triggers.get(label, ("-", 0.0))
        if event == "":
            self.armed[label] = at + delay

    def observe(self, event: dict[str, Any], labels: set[str]) -> None:
        label = event["label"]
        if label not in labels:
            return
        if event["event"] == "build" and self.kill_builder:
            self.kill_builder = False
            soon = event["t"] + self.rng.uniform(*BUILD_KILL_DELAY)
            self.armed[label] = min(self.armed.get(label, soon), soon)
            return
        wanted, delay = self.triggers.get(label, ("-", 0.0))
        if event["event"] == wanted and event["worker"] != "controller":
            self.armed.setdefault(label, event["t"] + delay)

    def due(self, label: str, now: float) -> bool:
        return label in self.armed and now >= self.armed[label]
