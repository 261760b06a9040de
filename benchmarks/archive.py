"""A cold CI job: a fresh own server (initdb), then the template built by migrating, or restored
from ``pgtemplate_archive_dir``; and the own server's warm start from a cached data directory.

Each case is an alembic project of N migrations over T tables (migration i creates table i
while i < T, then adds a column to table i mod T), with 3 seed rows in every fifth table:
10 / 150 / 500 migrations, and Prefect's shape (116 migrations, 36 tables). Per round: a new
cache directory, a cold start, a build that archives; another new cache directory, a cold start,
a restore; then the first cache directory's warm start, whose template is reused. Seconds,
median (min-max) of ``--rounds``.

    python benchmarks/archive.py [--rounds 3] [--cases 10 150 500 prefect]

Everything lives in temporary directories and throwaway servers, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pytest_pgtemplate.archive import Archive
from pytest_pgtemplate.migrators import AlembicMigrator
from pytest_pgtemplate.server.connection import Server
from pytest_pgtemplate.server.own import stop
from pytest_pgtemplate.server.per_run import LocalServerRequest, start_now
from pytest_pgtemplate.template import BuildOptions, TemplateInfo, template_for

REPO = Path(__file__).resolve().parent.parent
CASES = {"10": (10, 10), "150": (150, 100), "500": (500, 100), "prefect": (116, 36)}
REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "{rev:04d}"
down_revision = {down}
branch_labels = None
depends_on = None


def upgrade():
{body}
"""


def write_project(root: Path, migrations: int, tables: int) -> Path:
    (root / "migrations" / "versions").mkdir(parents=True)
    shutil.copy(REPO / "alembic.ini", root / "alembic.ini")
    versions = root / "migrations" / "versions"
    for name in ("env.py", "script.py.mako"):
        shutil.copy(REPO / "migrations" / name, root / "migrations" / name)
    for i in range(migrations):
        down = f'"{i - 1:04d}"' if i else "None"
        (versions / f"{i:04d}.py").write_text(
            REVISION.format(rev=i, down=down, body=_step(i, tables))
        )
    return root / "alembic.ini"


def _step(i: int, tables: int) -> str:
    if i < tables:
        lines = [
            f'    op.create_table("t{i}", sa.Column("id", sa.Integer, primary_key=True),'
            ' sa.Column("name", sa.Text))'
        ]
        if i % 5 == 0:
            lines.append(f"    op.execute(\"INSERT INTO t{i} (name) VALUES ('a'), ('b'), ('c')\")")
        return "\n".join(lines)
    return f'    op.add_column("t{i % tables}", sa.Column("c{i}", sa.Text))'


@dataclass
class Timing:
    start: float
    template: float
    how: str


@contextmanager
def own_server(cache: Path) -> Iterator[tuple[Server, float]]:
    started = time.perf_counter()
    own = start_now(LocalServerRequest(os.getpid(), None, cache, False))
    seconds = time.perf_counter() - started
    server = Server.connect(own.url, started_by_plugin=True)
    server.run_id = "benchmark000"
    try:
        yield server, seconds
    finally:
        server.close()
        stop(own)


def job(cache: Path, ini: Path, archive: Archive, lock_dir: Path) -> Timing:
    with own_server(cache) as (server, start_seconds):
        options = BuildOptions(lock_dir, 300.0, "benchmark", 3, archive)
        began = time.perf_counter()
        info: TemplateInfo = template_for(server, AlembicMigrator(ini), options)
        return Timing(start_seconds, time.perf_counter() - began, info.source)


def measure(case: str, rounds: int) -> dict[str, list[Timing]]:
    migrations, tables = CASES[case]
    results: dict[str, list[Timing]] = {"migrate": [], "archive": [], "warm data dir": []}
    with tempfile.TemporaryDirectory(
        dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    ) as t:
        root = Path(t)
        root.chmod(0o755)  # the server's OS user (root's runs use one) must pass through
        ini = write_project(root / "project", migrations, tables)
        for n in range(rounds):
            archive = Archive(root / f"archive{n}")
            built, restored = root / f"built{n}", root / f"restored{n}"
            results["migrate"].append(job(built, ini, archive, root))
            results["archive"].append(job(restored, ini, archive, root))
            results["warm data dir"].append(job(built, ini, archive, root))
            for cache in (built, restored):
                shutil.rmtree(cache, ignore_errors=True)
    return results


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    print("| migrations / tables | job | server start s | template s | total s | template was |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        migrations, tables = CASES[case]
        for name, timings in measure(case, args.rounds).items():
            starts = [t.start for t in timings]
            templates = [t.template for t in timings]
            totals = [t.start + t.template for t in timings]
            how = ", ".join(sorted({t.how for t in timings}))
            print(
                f"| {migrations} / {tables} | {name} | {cell(starts)} | {cell(templates)} "
                f"| {cell(totals)} | {how} |"
            )


if __name__ == "__main__":
    main()
