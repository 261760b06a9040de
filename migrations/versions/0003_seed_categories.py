"""seed reference rows: categories

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CATEGORIES = [("books", "Books"), ("garden", "Garden"), ("toys", "Toys")]


def upgrade() -> None:
    category = sa.table("category", sa.column("code"), sa.column("title"))
    op.bulk_insert(category, [{"code": code, "title": title} for code, title in CATEGORIES])


def downgrade() -> None:
    op.execute("DELETE FROM category")
