"""What the per-test reset costs a test, over the no-reset floor, at 10 to 1000 tables (issue 16).

One interleaved run: each round visits every size and case in a shuffled order, so machine load
hits all alike. A figure is a test body plus what the plugin runs around it (restore: the check
before + reset("restore"); rollback: the check before + the body in an outer transaction, rolled
back, + reset("rollback"); restore right after a reset: the body + reset("restore"), what a test
pays when it directly follows another's reset), minus the same round's body on an untracked clone
(the floor). "No superuser": the template built by a CREATEDB role (a catalog probe for the event
triggers). "Every sequence compared": the superuser's tracking with its WAL marks unused, as on
PostgreSQL 14 or without pg_walinspect.

    python benchmarks/reset_overhead.py [--tables 10 50 200 1000] [--rounds N] [--url URL] [--quick]

Without --url the plugin's own server runs it. Databases and the role are ``pgtemplate_bench_*``,
dropped at the end even on Ctrl-C. The report is printed and (not --quick) RESET_OVERHEAD.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from pytest_pgtemplate.claim import LIVENESS_CLASS, lock_key
from pytest_pgtemplate.databases import CloneOptions, clone, clone_options, drop, mark_finished
from pytest_pgtemplate.naming import DatabaseTag
from pytest_pgtemplate.reset.install import install
from pytest_pgtemplate.reset.resetter import Known, ResetOutcome, Resetter, open_resetter
from pytest_pgtemplate.server.admin import ServerInfo, describe
from pytest_pgtemplate.server.own import stop
from pytest_pgtemplate.server.per_run import LocalServerRequest, start_now
from reset_overhead_report import Meta, Samples, report

PREFIX = "pgtemplate_bench_"
MARKER = DatabaseTag("worker", project="pgtemplate_bench")
WARM_UP = 5  # rounds: a new connection re-plans its first executions
TIMEOUT = 30.0
CHECK, HOT = "check alone", "check alone, hot"  # hot: right after another call
COMPARED = "restore, every sequence compared"
FROM_WAL = "restore, sequences from the WAL"
# Column -> (strategy, superuser); "floor" runs the bare body on the untracked template's clone.
COLUMNS = {
    "floor": ("floor", True),
    "restore": ("restore", True),
    "restore, right after a reset": ("direct", True),  # nothing ran since: no check before
    # The same tracking, its WAL marks unused: every sequence compared after a test (PostgreSQL
    # 14, or no pg_walinspect), what "restore" was before them.
    COMPARED: ("restore", True),
    # The WAL read after every test, whatever the number of sequences (WAL_MIN_SEQUENCES: the
    # plugin reads it from 250 on, where it pays).
    FROM_WAL: ("restore", True),
    "rollback": ("rollback", True),
    "restore, no superuser": ("restore", False),
    "rollback, no superuser": ("rollback", False),
}
Rng = random.Random
T = TypeVar("T")
OUTER = {"BEGIN": "SAVEPOINT t", "COMMIT": "RELEASE SAVEPOINT t", "ROLLBACK": "ROLLBACK TO t"}


def schema(tables: int) -> str:
    """Serial PKs; every fifth table has 3 seed rows, every third references a seeded one."""
    statements = []
    for i in range(tables):
        parent = (i // 5) * 5
        fk = f" REFERENCES t{parent:03d}" if i % 3 == 1 and parent != i else ""
        statements.append(
            f"CREATE TABLE t{i:03d} (id serial PRIMARY KEY, parent_id int{fk}, "
            "payload text NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT now())"
        )
        if i % 5 == 0:
            statements.append(f"INSERT INTO t{i:03d} (payload) VALUES ('a'), ('b'), ('c')")
    return ";\n".join(statements)


def inserts(tables: list[str]) -> tuple[str, ...]:
    rows = [f"INSERT INTO {t} (payload) SELECT 'x' FROM generate_series(1, 5)" for t in tables]
    return ("BEGIN", *rows, "COMMIT")


def cases(tables: int) -> dict[str, tuple[str, ...]]:
    """Test bodies (statements); t002 is unseeded and referenced by no table."""
    unseeded = [f"t{i:03d}" for i in range(tables) if i % 5]
    found = {
        "nothing changed": ("SELECT 1 FROM t001 LIMIT 1",),
        "3 tables": inserts(unseeded[:3]),
        "30 tables": inserts(unseeded[:30]),
        "1 seeded table": inserts(["t005"]),
        "rolled-back insert": ("BEGIN", *inserts(["t001"])[1:-1], "ROLLBACK"),
        "bare nextval()": ("SELECT nextval('t001_id_seq')",),
        "TRUNCATE of 1 table": ("TRUNCATE t002",),
    }
    return {k: v for k, v in found.items() if k != "30 tables" or len(unseeded) >= 30}


def checked(outcome: ResetOutcome, before: bool) -> None:
    """A figure counts only if the reset did what a clean test needs: no re-clone, no leak."""
    if outcome.schema or outcome.leaked or outcome.prepared or (before and outcome.stats):
        raise RuntimeError(f"reset {'before' if before else 'after'} a test: {outcome}")


@dataclass
class Worker:
    """One clone: the test's connection and, but for the floor, the plugin's resetter."""

    strategy: str
    test: asyncpg.Connection
    resetter: Resetter | None = None

    async def run(self, body: tuple[str, ...]) -> float:
        """ms a test pays: the check before, the body, the reset after."""
        started = time.perf_counter()
        if self.resetter is None:
            await self.test.execute(";".join(body))
        elif self.strategy == "direct":
            await self.test.execute(";".join(body))
            checked(await self.resetter.reset("restore"), before=False)
        else:
            checked(await self.resetter.ensure_pristine(), before=True)
            if self.strategy == "rollback":
                body = ("BEGIN", *(OUTER.get(s, s) for s in body), "ROLLBACK")
            await self.test.execute(";".join(body))
            checked(await self.resetter.reset(self.strategy), before=False)
        return (time.perf_counter() - started) * 1000

    async def check_alone(self) -> float:
        assert self.resetter is not None
        started = time.perf_counter()
        checked(await self.resetter.ensure_pristine(), before=True)
        return (time.perf_counter() - started) * 1000


@dataclass
class Server:
    """The admin side: every database, connection and role the run makes, for the final drop."""

    url: str
    admin: asyncpg.Connection
    claim: asyncpg.Connection  # holds each clone's liveness lock, so no run's sweep drops it
    options: CloneOptions
    role: str = ""
    role_url: str = ""
    role_admin: asyncpg.Connection | None = None
    databases: list[str] = field(default_factory=list)
    connections: list[asyncpg.Connection] = field(default_factory=list)

    def dsn(self, database: str, superuser: bool = True) -> str:
        url = make_url(self.url if superuser else self.role_url).set(database=database)
        return url.render_as_string(hide_password=False)

    def admin_of(self, superuser: bool) -> asyncpg.Connection:
        return self.admin if superuser else self.role_admin

    async def connect(self, database: str, superuser: bool) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.dsn(database, superuser), timeout=TIMEOUT)
        self.connections.append(conn)
        return conn


def new_name(server: Server) -> str:
    name = f"{PREFIX}{secrets.token_hex(6)}"
    server.databases.append(name)
    return name


async def build_template(server: Server, tables: int, kind: str) -> str:
    """As the plugin builds one: the schema, the tracking (not for the floor's), marked finished."""
    superuser, name = kind != "no superuser", new_name(server)
    await server.admin_of(superuser).execute(f'CREATE DATABASE "{name}"')
    build = await server.connect(name, superuser)
    await build.execute(schema(tables))
    if kind != "plain":
        await install(build)
    await build.close()
    await mark_finished(server.admin_of(superuser), name)
    return name


async def clone_worker(server: Server, template: str, superuser: bool) -> str:
    """The plugin's clone (marker, settings), its liveness lock taken first as a worker does."""
    name = new_name(server)
    await server.claim.execute("SELECT pg_advisory_lock($1, $2)", LIVENESS_CLASS, lock_key(name))
    await clone(server.admin_of(superuser), template, name, MARKER, server.options)
    return name


async def worker(server: Server, template: str, column: str) -> Worker:
    strategy, superuser = COLUMNS[column]
    name = await clone_worker(server, template, superuser)
    each = Worker(strategy, await server.connect(name, superuser))
    if strategy != "floor":
        each.resetter = await open_resetter(server.dsn(name, superuser), name, TIMEOUT)
        server.connections.append(each.resetter.conn)
    if column == FROM_WAL and each.resetter is not None:
        each.resetter.wal_min_sequences = 0
    if column == COMPARED and each.resetter is not None:
        known = each.resetter.known
        layout = dataclasses.replace(known.layout, sequence_marks="compare")
        each.resetter = await open_resetter(
            server.dsn(name, superuser), name, TIMEOUT, Known(layout, known.settings)
        )
        server.connections.append(each.resetter.conn)
    return each


@dataclass
class Size:
    tables: int
    cases: dict[str, tuple[str, ...]]
    workers: dict[str, Worker]
    template: str  # the superuser's tracked template, cloned again for the setup figures


async def prepare(server: Server, tables: int) -> Size:
    print(f"building the {tables}-table templates and clones", file=sys.stderr, flush=True)
    kinds = {kind: await build_template(server, tables, kind) for kind in ("plain", "superuser")}
    kinds["no superuser"] = await build_template(server, tables, "no superuser")
    workers = {}
    for column, (strategy, superuser) in COLUMNS.items():
        kind = "plain" if strategy == "floor" else "superuser" if superuser else "no superuser"
        workers[column] = await worker(server, kinds[kind], column)
    return Size(tables, cases(tables), workers, kinds["superuser"])


async def one_round(sizes: list[Size], samples: Samples, rng: Rng, keep: bool) -> None:
    """Every (size, case) block in a shuffled order; inside one, the columns shuffled too."""
    blocks = [(size, case) for size in sizes for case in [*size.cases, CHECK]]
    rng.shuffle(blocks)
    for size, case in blocks:
        columns = list(size.workers) if case != CHECK else ["restore", "restore, no superuser"]
        rng.shuffle(columns)
        for column in columns:
            each, key = size.workers[column], (size.tables, case, column)
            if case != CHECK:
                record(samples, key, await each.run(size.cases[case]), keep)
                continue
            record(samples, key, await each.check_alone(), keep)  # its backend idle till now
            record(samples, (size.tables, HOT, column), await each.check_alone(), keep)


def record(samples: Samples, key: tuple[int, str, str], value: float, keep: bool) -> None:
    if keep:
        samples.setdefault(key, []).append(value)


async def setup_round(server: Server, sizes: list[Size], samples: Samples, rng: Rng) -> None:
    """Seconds for a clone alone, and for a clone + open_resetter (its own share kept apart)."""
    runs = [(size, opened) for size in sizes for opened in (False, True)]
    rng.shuffle(runs)
    for size, opened in runs:
        started = time.perf_counter()
        name = await clone_worker(server, size.template, True)
        cloned = time.perf_counter()
        record(samples, (size.tables, "setup", "clone"), cloned - started, not opened)
        if opened:
            resetter = await open_resetter(server.dsn(name), name, TIMEOUT)
            done = time.perf_counter()
            await resetter.close()
            record(samples, (size.tables, "setup", "open_resetter"), done - cloned, True)
            record(samples, (size.tables, "setup", "clone + open_resetter"), done - started, True)
        await drop(server.admin, name)
        server.databases.remove(name)


async def add_role(server: Server) -> None:
    """The CREATEDB role that builds the "no superuser" templates; dropped at the end."""
    server.role, password = f"{PREFIX}{secrets.token_hex(5)}", secrets.token_urlsafe(16)
    await server.admin.execute(f"CREATE ROLE {server.role} LOGIN CREATEDB PASSWORD '{password}'")
    url = make_url(server.url).set(username=server.role, password=password)
    server.role_url = url.render_as_string(hide_password=False)
    server.role_admin = await server.connect(url.database or "postgres", False)


async def measure(server: Server, tables: list[int], rounds: int, setups: int) -> Samples:
    await add_role(server)
    sizes = [await prepare(server, each) for each in tables]
    samples: Samples = {}
    rng = random.Random(16)
    for number in range(WARM_UP + rounds):
        await one_round(sizes, samples, rng, keep=number >= WARM_UP)
    print("timing worker setup", file=sys.stderr, flush=True)
    for _ in range(setups):  # apart: file churn would slow the per-test figures
        await setup_round(server, sizes, samples, rng)
    return samples


async def clean_up(server: Server) -> None:
    """Drop everything created, on a new connection: the old one may be mid-query (Ctrl-C)."""
    for conn in server.connections:
        conn.terminate()
    admin = await asyncpg.connect(server.url, timeout=TIMEOUT)
    try:
        for name in reversed(server.databases):
            try:
                await drop(admin, name)
            except asyncpg.PostgresError as exc:  # go on: drop all the others
                print(f"could not drop {name}: {exc}", file=sys.stderr)
        if server.role:
            await admin.execute(f"DROP ROLE IF EXISTS {server.role}")
    finally:
        await admin.close()
        server.claim.terminate()  # the liveness locks go last


async def on_server(url: str, own: bool, work: Callable[[Server, ServerInfo], Awaitable[T]]) -> T:
    """``work`` with the admin side connected; everything it made is dropped after, even on
    failure (this module's, check_cost.py's and sequence_marks.py's runs alike)."""
    admin = await asyncpg.connect(url, timeout=TIMEOUT)
    info = await describe(admin, make_url(url), started=own)
    options = clone_options(info, durable=False)
    server = Server(url, admin, await asyncpg.connect(url, timeout=TIMEOUT), options)
    try:
        return await work(server, info)
    finally:
        admin.terminate()
        await clean_up(server)


def with_server(url: str | None, work: Callable[[str, bool], T]) -> T:
    """``work(url, own)`` on the server ``url`` names, or on the plugin's own, started here
    and stopped after."""
    own = None if url else start_now(LocalServerRequest(os.getpid(), None, None, False))
    try:
        return work(own.url if own else str(url), own is not None)
    finally:
        if own is not None:
            stop(own)


def header(title: str, command: str, url: str) -> list[str]:
    """The first lines of a report: what ran, when, at which commit, where, under what load."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"# {title}",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(UTC).isoformat(timespec='seconds')}; git commit {commit}",
        f"- Server: {url.rsplit('@', 1)[-1]}; load at the end {load}",
    ]


async def bench(url: str, tables: list[int], rounds: int, setups: int, own: bool) -> Meta:
    async def work(server: Server, info: ServerInfo) -> Meta:
        version = await server.admin.fetchval("SHOW server_version")
        meta = Meta.start(url, version, info.fsync, own)
        meta.samples = await measure(server, tables, rounds, setups)
        return meta.finish()

    return await on_server(url, own, work)


def main() -> None:
    parser = argparse.ArgumentParser(description="Per-test reset overhead, as Markdown.")
    parser.add_argument("--tables", type=int, nargs="+", help="default 10 50 200 1000")
    parser.add_argument("--rounds", type=int, help="default 100 (--quick: 12)")
    parser.add_argument("--url", help="admin URL; default: the plugin's own server")
    parser.add_argument("--quick", action="store_true", help="10 and 50 tables, few rounds (CI)")
    args = parser.parse_args()
    tables: list[int] = args.tables or ([10, 50] if args.quick else [10, 50, 200, 1000])
    rounds: int = args.rounds or (12 if args.quick else 100)
    setups = 2 if args.quick else 8
    meta = with_server(
        args.url, lambda url, own: asyncio.run(bench(url, tables, rounds, setups, own))
    )
    text = report(meta, tables, rounds, list(cases(max(tables))))
    print(text)
    if not args.quick:  # a CI smoke run must not overwrite the recorded figures
        Path(__file__).with_name("RESET_OVERHEAD.md").write_text(text)


if __name__ == "__main__":
    main()
