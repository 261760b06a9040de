"""A new user's first run: `alembic init -t async`, the Quick start's config, `pytest -n 2`."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import InnerProject

# What README.md's Quick start shows, verbatim apart from the server (the suite's own).
QUICK_START_CONFIG = """
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
pgtemplate_url = "{url}"
pgtemplate_project = "{project}"
"""

FIRST_MIGRATION = '''
"""create product"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "product",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("product")
'''

QUICK_START_TEST = """
from sqlalchemy import text


async def test_products(pg_session):
    await pg_session.execute(text("INSERT INTO product (name) VALUES ('Dune')"))
    await pg_session.commit()
    assert await pg_session.scalar(text("SELECT count(*) FROM product")) == 1


async def test_each_test_starts_clean(pg_session):
    assert await pg_session.scalar(text("SELECT count(*) FROM product")) == 0
"""


def test_alembic_init_async_and_the_quick_start_pass_on_the_first_run(
    project: InnerProject, server_url: str
) -> None:
    root = project.path
    (root / "tox.ini").unlink()
    (root / "alembic.ini").unlink()
    shutil.rmtree(root / "migrations")  # the harness's; this project starts from alembic init
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "init", "-t", "async", "migrations"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (root / "migrations/versions/0001_create_product.py").write_text(FIRST_MIGRATION)
    (root / "pyproject.toml").write_text(
        QUICK_START_CONFIG.format(url=server_url, project=project.project)
    )
    project.write_tests(QUICK_START_TEST, name="test_products")
    result = project.run("-n", "2", "-W", "error")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*warning*")
    result.stdout.fnmatch_lines(["*template pgtemplate_tpl_* built by gw*"])
