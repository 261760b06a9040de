"""The template archive: a CI job whose server lacks the template restores it instead of
migrating, and trusts nothing it cannot verify (corrupt, partial, foreign or wrong entries are
rebuilt, with a warning)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from conftest import InnerProject

SUITE = """
from sqlalchemy import text

async def test_seeds_are_there(pg_session):
    assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
    await pg_session.execute(text("DELETE FROM category"))
    await pg_session.commit()

async def test_and_come_back(pg_session):
    assert await pg_session.scalar(text("SELECT count(*) FROM category")) == 3
"""


@pytest.fixture
def archived(project: InnerProject, tmp_path: Path) -> Path:
    """A project whose first run built its template and archived it; the template is then
    dropped, as a fresh CI server would lack it."""
    directory = tmp_path / "archive"
    project.add_ini(pgtemplate_archive_dir=str(directory))
    project.write_tests(SUITE)
    first = project.run("-p", "no:xdist", "-W", "default")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["*template pgtemplate_tpl_* built by main in *"])
    assert project.migrations_run() == 1
    (entry,) = directory.glob("*.json")
    assert json.loads(entry.read_text())["sha256"]
    project.owned.drop_all(project.admin)
    return directory


def test_a_server_without_the_template_restores_it_from_the_archive(
    project: InnerProject, archived: Path
) -> None:
    result = project.run("-n", "2", "-W", "default")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*rebuilding*")
    result.stdout.fnmatch_lines(["*template pgtemplate_tpl_* restored from archive by gw* in *"])
    assert project.migrations_run() == 1, "no migration ran"


def _rewrite(directory: Path, change: str) -> None:
    (meta,) = directory.glob("*.json")
    dump = meta.with_name(meta.name.replace(".json", ".sql.gz"))
    record = json.loads(meta.read_text())
    if change == "corrupt":
        dump.write_bytes(dump.read_bytes()[:-40] + b"\0" * 40)
    elif change == "partial":
        meta.unlink()
    elif change == "foreign":
        record["fingerprint"] = "0" * 64
        meta.write_text(json.dumps(record))
    elif change == "unverifiable":  # whole and this template's, but its rows do not verify
        sql = gzip.decompress(dump.read_bytes()).decode()
        sql = sql.replace("INSERT INTO public.alembic_version", "-- INSERT INTO x")
        data = gzip.compress(sql.encode())
        dump.write_bytes(data)
        record["sha256"] = hashlib.sha256(data).hexdigest()
        meta.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("change", "warning"),
    [
        ("corrupt", "*archive entry * is corrupt*rebuilding*"),
        ("partial", "*archive entry * has no * (partial): rebuilding*"),
        ("foreign", "*archive entry * is another template's*rebuilding*"),
        ("unverifiable", "*the archived template failed*rebuilding*"),
    ],
)
def test_an_entry_it_cannot_trust_is_rebuilt_with_a_warning(
    project: InnerProject, archived: Path, change: str, warning: str
) -> None:
    _rewrite(archived, change)
    result = project.run("-p", "no:xdist", "-W", "default")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([warning])
    result.stdout.fnmatch_lines(["*template pgtemplate_tpl_* built by main in *"])
    assert project.migrations_run() == 2, "it migrated again"
