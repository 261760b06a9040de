"""Concurrency soak at CI-shard scale: 8 shards x ``pytest -n 2`` per round, random SIGKILLs.

    python benchmarks/soak.py [--rounds 10] [--runs 8] [--seed 1] [--url URL] [--quick]

Each round starts ``--runs`` real ``pytest -n 2`` runs at once, each in its own directory (as on
separate machines), all with the same migrations, so they share one template fingerprint that is
new to the server. In every round one to ``runs // 2`` of them are SIGKILLed (the whole process
group) at a random moment aimed at one phase (``soak_kills``): start-up, sweep and clone, tests,
teardown, or any time; in round 1 the first short run seen building the template is killed
mid-build. One "live" run starts with the first round and runs through all of them; each of its
many tests checks that it is on its worker's database, that the database is still this run's and
in the template state, then sleeps a little. Every test of the short runs makes the same check.
After the rounds, one more run sweeps, and the soak counts what is left of its own databases.

Counted: wrong drops (a live database dropped under its run: any failure of the live run, and
any run's failure that looks like a vanished database; target 0), leaked databases after the
sweep (target 0), template builds (target 1, plus builds whose builder was killed mid-way).
The soak uses its own ``pgtemplate_project`` and migrations, so it only ever reads, counts and
drops its own databases; it drops all of them at the end, also on Ctrl-C or a failure.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from soak_db import OwnDatabase, drop_own, own_databases
from soak_kills import EventTail, KillPlan
from soak_project import live_tests, make_project, short_tests
from soak_report import Findings, RunRecord, Traces, print_details, print_table

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LIVE = "live"
LIVE_SLEEP = 1.0
"""Seconds each live test sleeps: a drop is seen by the next test whatever the pause."""
RUN_TIMEOUT = 240.0
PYTEST = [sys.executable, "-m", "pytest", "-n", "2", "-q", "-rfE"]
PYTEST += ["-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:randomly"]


@dataclass
class Soak:
    """The scratch area, the soak's identity on the server, and every process it started."""

    args: argparse.Namespace
    base: Path
    project: str = field(default_factory=lambda: f"pgtemplate-soak-{uuid.uuid4().hex[:12]}")
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    live: RunRecord | None = None
    tail: EventTail = field(init=False)

    def __post_init__(self) -> None:
        self.tail = EventTail(self.path("events"))

    def start_live(self) -> None:
        tests = live_tests(self.args.live_tests, LIVE_SLEEP)
        self.live = self.launch(LIVE, self.directory(LIVE, tests), 0)

    def path(self, name: str) -> Path:
        return self.base / name

    def traces(self) -> Traces:
        return Traces.read(self.path("events"), self.path("failures"), self.path("incidents"))

    def directory(self, name: str, tests: str) -> Path:
        """One simulated machine; kept across rounds, like a CI runner's checkout."""
        directory = self.path(name)
        if directory.exists():
            return directory
        return make_project(
            directory,
            url=self.args.url,
            project=self.project,
            marker=self.marker,
            tests=tests,
            build_seconds=1.0,
        )

    def launch(self, label: str, directory: Path, round_no: int) -> RunRecord:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGTEMPLATE_")}
        env.update(
            SOAK_LABEL=label,
            SOAK_PROJECT=self.project,
            SOAK_EVENTS=str(self.path("events")),
            SOAK_FAILURES=str(self.path("failures")),
            SOAK_INCIDENTS=str(self.path("incidents")),
        )
        if label == LIVE:
            env["SOAK_STOP"] = str(self.path("stop"))
        output = directory / f"{label}.out"
        with output.open("wb") as sink:
            self.running[label] = subprocess.Popen(
                [*PYTEST, f"--basetemp={directory / 'tmp'}"],
                cwd=directory,
                env=env,
                start_new_session=True,  # its own process group: one killpg ends the whole run
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        record = RunRecord(label, round_no, time.time(), output)
        self.runs.append(record)
        return record

    def kill(self, record: RunRecord) -> None:
        process = self.running.get(record.label)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            record.killed_at = time.time()

    def reap(self, record: RunRecord, *, deadline: float | None = None) -> bool:
        """True once the run has ended; past ``deadline`` it is killed and marked hung."""
        process = self.running[record.label]
        if process.poll() is None and deadline is not None and time.time() > deadline:
            record.hung = True
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.poll() is None:
            return False
        record.exit_code, record.ended = process.returncode, time.time()
        del self.running[record.label]
        return True

    def kill_everything(self) -> None:
        """Ctrl-C or a failure: end every process group this soak started, by its own id."""
        for process in list(self.running.values()):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.running.clear()

    def own(self) -> list[OwnDatabase]:
        traces = self.traces()
        return own_databases(self.args.url, self.project, traces.run_ids(), traces.templates())


def one_round(soak: Soak, round_no: int, rng: random.Random, estimate: float) -> list[RunRecord]:
    """``--runs`` shards at once (starts jittered like CI jobs), some SIGKILLed at random.

    The live run starts with the first round, after its shards: any of the nine may build.
    """
    tests = short_tests(soak.args.tests)
    slots = [f"r{round_no}s{slot}" for slot in range(soak.args.runs)]
    plan = KillPlan.choose(rng, slots, estimate, kill_builder=round_no == 1)
    records = []
    for slot, label in enumerate(slots):
        time.sleep(rng.uniform(0, 0.5 / soak.args.runs))
        records.append(soak.launch(label, soak.directory(f"machine{slot}", tests), round_no))
        plan.started(label, records[-1].started)
    if round_no == 1:
        soak.start_live()
    pending, labels = list(records), set(slots)
    while pending:
        time.sleep(0.02)
        for event in soak.tail.new():
            plan.observe(event, labels)
        for record in list(pending):
            if record.killed_at is None and plan.due(record.label, time.time()):
                soak.kill(record)
            if soak.reap(record, deadline=record.started + RUN_TIMEOUT):
                pending.remove(record)
    return records


def rounds(soak: Soak, rng: random.Random) -> None:
    durations: list[float] = []
    for round_no in range(1, soak.args.rounds + 1):
        estimate = statistics.median(durations) if durations else 8.0
        began = time.monotonic()
        records = one_round(soak, round_no, rng, estimate)
        durations += [
            r.ended - r.started for r in records if r.ended and r.killed_at is None and not r.hung
        ]
        killed = sum(r.killed_at is not None for r in records)
        failed = [r.label for r in records if r.killed_at is None and r.exit_code != 0]
        if round_no == 1 and soak.args.self_test:
            drop_live_database(soak)
        live = "running" if LIVE in soak.running else "ENDED"
        print(
            f"round {round_no}: {time.monotonic() - began:.0f} s, {len(records)} runs, "
            f"{killed} killed, failed {failed or 'none'}, live run {live}",
            file=sys.stderr,
            flush=True,
        )


def drop_live_database(soak: Soak) -> None:
    """``--self-test``: do what a wrong sweep would, to show that the soak reports it."""
    names = {e["database"] for e in soak.traces().of(LIVE) if e["event"] == "cloned"}
    victim = OwnDatabase(sorted(names)[0], "worker", finished_template=False)
    print(f"self-test: dropping the live run's {victim.name}", file=sys.stderr, flush=True)
    drop_own(soak.args.url, [victim])


def finish_live(soak: Soak, live: RunRecord) -> bool:
    """Stop the live run's remaining tests; True if it was still running when the rounds ended."""
    still_running = LIVE in soak.running
    soak.path("stop").touch()
    while not soak.reap(live, deadline=time.time() + 180 if still_running else None):
        time.sleep(0.1)
    return still_running


def sweep_run(soak: Soak) -> RunRecord:
    """One more ordinary run after everything else has ended: its workers sweep at start."""
    record = soak.launch("sweep", soak.directory("sweeper", short_tests(soak.args.tests)), 0)
    while not soak.reap(record, deadline=record.started + RUN_TIMEOUT):
        time.sleep(0.1)
    return record


def soak_main(soak: Soak, rng: random.Random) -> int:
    started = time.monotonic()
    rounds(soak, rng)
    live = soak.live
    assert live is not None
    stopping = time.monotonic()
    covered = finish_live(soak, live)
    print(
        f"rounds over at {stopping - started:.0f} s; the live run skipped its remaining tests "
        f"and ended {time.monotonic() - stopping:.0f} s later",
        file=sys.stderr,
        flush=True,
    )
    before_sweep = [d.name for d in soak.own() if not d.finished_template]
    sweep = sweep_run(soak)
    found = Findings(
        soak.runs, soak.traces(), soak.own(), live, sweep, covered, time.monotonic() - started
    )
    found.before_sweep = before_sweep
    print_table(found, f"{soak.args.runs} runs at once x `pytest -n 2`, {soak.args.rounds} rounds")
    print_details(found)
    return 0 if found.on_target() else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=8, help="shards started at once per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default=DEFAULT_URL, help="the server's maintenance database")
    parser.add_argument("--tests", type=int, default=4, help="tests per short run")
    parser.add_argument("--quick", action="store_true", help="3 runs x 2 rounds, 3 tests each")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="drop one of the live run's databases after round 1: the soak must report it",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.runs, args.tests = 2, 3, 3
    # Enough live tests (two workers) to outlast the rounds, even at 60 s a round on a busy
    # machine; the ones left when the rounds end are skipped.
    args.live_tests = 2 * math.ceil((120 + 60 * args.rounds) / LIVE_SLEEP)
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="pgtemplate-soak-") as scratch:
        soak = Soak(args, Path(scratch))
        print(f"soak project {soak.project}, scratch {scratch}", file=sys.stderr, flush=True)
        try:
            return soak_main(soak, random.Random(args.seed))
        finally:
            soak.kill_everything()
            own = soak.own()
            problems = drop_own(args.url, own)
            left = soak.own()
            print(f"\nclean-up: dropped {len(own) - len(left)} of the soak's databases", end="")
            print(f"; left {[d.name for d in left]} {problems}" if left else "", flush=True)


if __name__ == "__main__":
    sys.exit(main())
