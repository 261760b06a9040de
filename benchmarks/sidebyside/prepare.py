"""Before the rounds: write the suites, compile them, and migrate the floor's databases."""

from __future__ import annotations

import asyncio
import compileall
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from .config import Plan
from .generate import write_suite
from .runner import BENCH_DIR, Context, python_path

_MIGRATE = (
    "import sys\n"
    "from alembic import command\n"
    "from alembic.config import Config\n"
    "config = Config(sys.argv[1])\n"
    "config.set_main_option('sqlalchemy.url', sys.argv[2])\n"
    "command.upgrade(config, 'head')\n"
)


def write_suites(plan: Plan, ctx: Context) -> None:
    """One directory per workload, named with the run's prefix (the plugin's project name)."""
    for workload in plan.workloads:
        suite = write_suite(ctx.scratch / ctx.prefix(workload), workload, ctx.run_id)
        compileall.compile_dir(str(suite), quiet=1)
        ctx.suites[workload.key] = suite


def create_floor_databases(plan: Plan, ctx: Context) -> None:
    """The floor's database exists before its runs start: its cost is not the floor's."""
    for workload in plan.workloads:
        name = ctx.floor_db(workload)
        asyncio.run(_create_database(ctx.admin_url, name))
        url = make_url(ctx.admin_url).set(drivername="postgresql+asyncpg", database=name)
        ini = ctx.suites[workload.key] / "alembic.ini"
        _run([sys.executable, "-c", _MIGRATE, str(ini), url.render_as_string(hide_password=False)])


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr.strip()[-500:]}")


def freeze_plugin(ctx: Context) -> dict[str, str]:
    """Benchmark one version of the plugin: a copy of src/ taken now, first on PYTHONPATH.

    The working tree may change while a 20-minute run goes on; the copy does not.
    """
    repo = BENCH_DIR.parent
    target = ctx.scratch / "plugin-src"
    shutil.copytree(repo / "src", target, ignore=shutil.ignore_patterns("__pycache__"))
    return _frozen(ctx, target, _git(repo, "status", "--porcelain", "src"))


def freeze_committed_plugin(ctx: Context) -> dict[str, str]:
    """Like ``freeze_plugin``, but src/ as committed at HEAD: edits in progress stay out."""
    repo = BENCH_DIR.parent
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", "HEAD", "src"],
        capture_output=True,
        check=True,
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(ctx.scratch, filter="data")
    target = ctx.scratch / "plugin-src"
    (ctx.scratch / "src").rename(target)
    return _frozen(ctx, target, "")


def _frozen(ctx: Context, target: Path, uncommitted: str) -> dict[str, str]:
    ctx.plugin_src = target
    repo = BENCH_DIR.parent
    digest = hashlib.sha256()
    for path in sorted(target.rglob("*.py")):
        digest.update(path.relative_to(target).as_posix().encode() + b"\0" + path.read_bytes())
    return {
        "git_head": _git(repo, "rev-parse", "--short", "HEAD"),
        "uncommitted_files": str(len(uncommitted.splitlines())),
        "src_sha256": digest.hexdigest()[:16],
    }


def preflight(ctx: Context) -> None:
    """Fail in one line, before any round, when a needed package does not import."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path(ctx))}
    code = "import pytest_pgtemplate.plugin, pytest_postgresql, xdist, pytest_asyncio, matplotlib"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:]
        raise RuntimeError(
            f"cannot import what the benchmark needs: {last} (pip install -e '.[bench]')"
        )


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()
