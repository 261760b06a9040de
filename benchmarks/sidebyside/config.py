"""What is measured: workloads, setups, and the cases (workload x setup x workers) of a plan."""

from __future__ import annotations

from dataclasses import dataclass, field

SETUP_MODULES = "sidebyside.setups"


@dataclass(frozen=True)
class Workload:
    """A generated suite: ``tests`` async ORM tests over ``tables`` made by ``migrations``."""

    tables: int
    migrations: int
    tests: int
    seeded: bool = False
    """Seed rows in several tables (a data migration), and a quarter of the tests commit
    changes to them: the real-suite shape. False keeps the original suite, byte for byte."""

    @property
    def key(self) -> str:
        return f"t{self.tables}m{self.migrations}" + ("s" if self.seeded else "")

    @property
    def label(self) -> str:
        label = f"{self.tests} tests, {self.tables} tables, {self.migrations} migrations"
        return label + (", a quarter committing to seeded tables" if self.seeded else "")


@dataclass(frozen=True)
class Setup:
    """One way to give each test a database: a ``-p`` plugin module plus extra pytest args."""

    key: str
    label: str
    module: str
    args: tuple[str, ...] = ()
    needs_url: bool = False
    embedded: bool = False
    reset: str = ""


@dataclass(frozen=True)
class Case:
    workload: Workload
    setup: Setup
    workers: str
    """``0``, ``2`` or ``auto``: the value given to ``-n``."""
    rounds: int
    expect_failures: bool = False
    """Report the failure count, not a time (session-level classic under xdist)."""
    sample: int | None = None
    """Run only the suite's first ``sample`` tests (whole test files); None runs them all."""

    @property
    def key(self) -> str:
        key = f"{self.workload.key}/{self.setup.key}/n{self.workers}"
        return key + (f"/first{self.sample}" if self.sample is not None else "")

    @property
    def tests_run(self) -> int:
        return self.workload.tests if self.sample is None else self.sample


@dataclass(frozen=True)
class Plan:
    name: str
    workloads: tuple[Workload, ...]
    cases: tuple[Case, ...]
    rounds: int
    default: Workload
    cuts: tuple[str, ...] = field(default=())


def _plugin(reset: str, *, fnloop: bool = False, embedded: bool = False) -> Setup:
    args: tuple[str, ...] = ("--pgtemplate-reset", reset)
    if fnloop:
        args += (
            "-o",
            "asyncio_default_test_loop_scope=function",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
        )
    key = "plugin-" + reset + ("-fnloop" if fnloop else "") + ("-embedded" if embedded else "")
    label = f"pytest-pgtemplate `{reset}`"
    if fnloop:
        label += ", function loop scope"
    if embedded:
        label += ", own tmpfs server"
    return Setup(
        key,
        label,
        f"{SETUP_MODULES}.plugin_session",
        args,
        needs_url=not embedded,
        embedded=embedded,
        reset=reset,
    )


FUNCTION = Setup(
    "function", "function-level: create + migrate per test", f"{SETUP_MODULES}.function_level"
)
CLASSIC = Setup(
    "classic", "session-level classic: TRUNCATE after each test", f"{SETUP_MODULES}.session_classic"
)
PYTEST_POSTGRESQL = Setup(
    "pytest-postgresql", "pytest-postgresql 10 (clone per test)", f"{SETUP_MODULES}.pytest_pg"
)
PER_WORKER_DELETE = Setup(
    "per-worker-delete",
    "per-worker migrate + DELETE-all + re-seed",
    f"{SETUP_MODULES}.per_worker_delete",
)
FLOOR = Setup("floor", "floor: pre-migrated, no reset", f"{SETUP_MODULES}.floor")
PLUGIN_DEFAULT = _plugin("restore")
PLUGIN_FNLOOP = _plugin("restore", fnloop=True)
PLUGIN_EMBEDDED = _plugin("restore", embedded=True)
PLUGIN_ROLLBACK = _plugin("rollback")


def _default_matrix(workload: Workload, rounds: int) -> list[Case]:
    """Target comparisons and cheap cases get every round; costly extras get one."""
    cases = [Case(workload, setup, w, rounds) for setup, w in _TARGET_CASES]
    cases += [Case(workload, PLUGIN_DEFAULT, "0", rounds), Case(workload, FLOOR, "0", rounds)]
    cases += [Case(workload, PLUGIN_ROLLBACK, w, rounds) for w in ("0", "2")]
    cases += [
        Case(workload, PLUGIN_DEFAULT, "auto", rounds),
        Case(workload, PLUGIN_FNLOOP, "2", rounds),
        Case(workload, PLUGIN_EMBEDDED, "2", rounds),
    ]
    cases += [Case(workload, _plugin("truncate-all"), w, 1) for w in ("0", "2")]
    cases.append(Case(workload, _plugin("recreate"), "2", 1))
    cases.append(Case(workload, CLASSIC, "2", 1, expect_failures=True))
    return cases


_TARGET_CASES = (
    (FUNCTION, "2"),
    (CLASSIC, "0"),
    (PLUGIN_DEFAULT, "2"),
    (PYTEST_POSTGRESQL, "2"),
    (FLOOR, "2"),
)


def _subset(workload: Workload, rounds: int) -> list[Case]:
    """Other workloads: the target comparisons once, the cheap ones every round."""
    cases = [Case(workload, setup, w, 1) for setup, w in _TARGET_CASES]
    cheap = {PLUGIN_DEFAULT.key, FLOOR.key}
    cases = [
        Case(c.workload, c.setup, c.workers, rounds if c.setup.key in cheap else 1) for c in cases
    ]
    cases.insert(3, Case(workload, PLUGIN_DEFAULT, "0", rounds))
    return cases


def full_plan(tests: int, rounds: int) -> Plan:
    default = Workload(50, 50, tests)
    small = Workload(10, 10, tests)
    long_chain = Workload(200, 300, max(tests // 4, 10))
    cases = [
        *_default_matrix(default, rounds),
        *_subset(small, rounds),
        *_subset(long_chain, rounds),
    ]
    cuts = (
        f"{rounds} round(s) for the target comparisons and every cheap case; one run (no min-max) "
        "for the costly extras: truncate-all, recreate, the other workloads' baselines.",
        "Not run at -n 0 (their -n 0 time is ~2x their -n 2, see the per-test table): "
        "function-level, pytest-postgresql, recreate; the 300-migration chain runs one "
        f"representative row per setup with {long_chain.tests} tests (not {tests}).",
        "-n auto equals -n 2 on this 2-core machine: measured once, for the plugin default.",
    )
    return Plan("full", (default, small, long_chain), tuple(cases), rounds, default, cuts)


def quick_plan(tests: int, rounds: int) -> Plan:
    default = Workload(50, 50, tests)
    cases = (
        Case(default, FUNCTION, "2", rounds),
        Case(default, CLASSIC, "0", rounds),
        Case(default, PLUGIN_DEFAULT, "0", rounds),
        Case(default, PLUGIN_DEFAULT, "2", rounds),
        Case(default, PYTEST_POSTGRESQL, "2", rounds),
        Case(default, FLOOR, "2", rounds),
    )
    cuts = (
        f"quick: {tests} tests, {rounds} round(s), one workload, -n 0/2 subset.",
        "The targets are set for 200 tests: with fewer, fixed costs (xdist start-up ~2.5 s, "
        "clones) weigh more and the ratios come out smaller. Use `make bench` to judge them.",
    )
    return Plan("quick", (default,), cases, rounds, default, cuts)


def real_suite_plan(tests: int, rounds: int, function_tests: int | None) -> Plan:
    """Issue 10's real-suite shape at -n 2: the plugin against what large suites do today, and
    against its own ``rollback``, the floor here (the tests change seed rows: no-reset fails them).

    Function-level may run only its first ``function_tests`` tests (one round): the report
    extrapolates its total. The other two always run every test, ``rounds`` times.
    """
    workload = Workload(100, 150, tests, seeded=True)
    sample = None if function_tests is None or function_tests >= tests else function_tests
    cases = (
        Case(workload, FUNCTION, "2", 1, sample=sample),
        Case(workload, PER_WORKER_DELETE, "2", rounds),
        Case(workload, PLUGIN_DEFAULT, "2", rounds),
        Case(workload, PLUGIN_ROLLBACK, "2", rounds),  # issue 16's floor for this suite
    )
    cuts = (
        f"function-level: one run of {sample or tests} tests"
        + (f" (its total for {tests} is extrapolated)" if sample else "")
        + f"; the others {rounds} interleaved round(s) of all {tests} tests.",
    )
    return Plan("real-suite", (workload,), cases, rounds, workload, cuts)
