"""category, customer, orders

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "category",
        sa.Column("id", sa.Integer, sa.Identity(always=False), primary_key=True),
        sa.Column("code", sa.String(40), nullable=False, unique=True),
        sa.Column("title", sa.String(100), nullable=False),
    )
    op.add_column("product", sa.Column("category_id", sa.Integer, sa.ForeignKey("category.id")))
    op.create_table(
        "customer",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("email", sa.String(200), nullable=False, unique=True),
    )
    op.create_table(
        "purchase_order",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("customer_id", sa.BigInteger, sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), server_default=sa.text("now()")),
    )
    op.create_table(
        "order_line",
        sa.Column(
            "order_id",
            sa.BigInteger,
            sa.ForeignKey("purchase_order.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "product_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("product.id"),
            primary_key=True,
        ),
        sa.Column("quantity", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("order_line")
    op.drop_table("purchase_order")
    op.drop_table("customer")
    op.drop_column("product", "category_id")
    op.drop_table("category")
