"""CI shards, as a matrix runs them: several pytest processes at once, each with its own slice of
the suite, on one shared server (one build, the others wait and reuse it) or each on its own
throwaway server with one template archive (restored, not migrated). Results are right and
nothing is left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import InnerProject
from pytest_pgtemplate.server.own import stop_data_dir

SHARD = """
import pytest
from sqlalchemy import text

@pytest.mark.parametrize("n", range(4))
async def test_shard_{shard}(pg_session, n):
    assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
    await pg_session.execute(text("DELETE FROM category"))
    await pg_session.commit()
"""
SHARDS = 3


def start_shards(project: InnerProject, *extra: list[str]) -> list[subprocess.Popen[str]]:
    """One process per shard, all at once; shard i runs test_shard_i.py (pytest-split's way)."""
    shards = []
    for i in range(SHARDS):
        (project.path / f"test_shard_{i}.py").write_text(SHARD.format(shard=i))
    for i in range(SHARDS):
        args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
        args += ["-n", "2", f"test_shard_{i}.py", *extra[i]]
        shards.append(subprocess.Popen(args, cwd=project.path, stdout=subprocess.PIPE, text=True))
    return shards


def outputs(shards: list[subprocess.Popen[str]]) -> list[str]:
    texts = [shard.communicate(timeout=240)[0] for shard in shards]
    for shard, text in zip(shards, texts, strict=True):
        assert shard.returncode == 0, text
        assert "4 passed" in text, text
    return texts


def test_shards_on_one_shared_server_build_once(project: InnerProject) -> None:
    shards = start_shards(project, *([[]] * SHARDS))
    texts = outputs(shards)
    built = [text for text in texts if " built by " in text]
    assert len(built) == 1, "one shard built the template, the others waited and reused it"
    assert project.migrations_run() == 1
    assert project.databases() == project.databases("template"), "no worker database is left"


@pytest.fixture
def caches() -> Iterator[list[Path]]:
    """Cache directories for own servers (on tmpfs like the default, reachable by the server's
    OS user); whatever runs from them is stopped after, and they are removed."""
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path("/tmp")
    paths = [base / f"pgtemplate-test-{uuid.uuid4().hex[:8]}" for _ in range(SHARDS + 1)]
    yield paths
    for path in paths:
        for data_dir in path.glob("*/slot*/data"):
            stop_data_dir(data_dir)
        shutil.rmtree(path, ignore_errors=True)


def test_shards_on_their_own_servers_restore_one_archive(
    project: InnerProject, caches: list[Path], tmp_path: Path
) -> None:
    archive = str(tmp_path / "archive")
    project.write_ini(pgtemplate_project=project.project, asyncio_mode="auto")  # own servers
    for i in range(SHARDS):
        (project.path / f"test_shard_{i}.py").write_text(SHARD.format(shard=i))
    # The first CI run: a shard builds and archives (a cache action then keeps the directory).
    first = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "test_shard_0.py",
         "--pgtemplate-cache-dir", str(caches[-1]), "--pgtemplate-archive-dir", archive],
        cwd=project.path, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout
    assert " built by " in first.stdout
    # The next run: every shard, at once, on a fresh server of its own, restores the archive.
    shards = start_shards(
        project,
        *[["--pgtemplate-cache-dir", str(c), "--pgtemplate-archive-dir", archive] for c in caches],
    )
    texts = outputs(shards)
    assert all(" restored from archive by " in text for text in texts), texts
    assert project.migrations_run() == 1, "no shard migrated"
    for cache in caches:
        for data_dir in cache.glob("*/slot*/data"):
            assert not (data_dir / "postmaster.pid").exists(), "every own server stopped"
