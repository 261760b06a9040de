"""Application code under test."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Category, Product, Review


async def add_product(session: AsyncSession, name: str, category_code: str) -> Product:
    category = await session.scalar(select(Category).where(Category.code == category_code))
    product = Product(name=name, category_id=category.id if category else None)
    session.add(product)
    await session.flush()
    return product


async def add_review(session: AsyncSession, product: Product, content: str, rating: str) -> Review:
    review = Review(content=content, rating=Decimal(rating), product_id=product.id)
    session.add(review)
    await session.flush()
    return review


async def average_rating(session: AsyncSession, product: Product) -> Decimal | None:
    return await session.scalar(
        select(func.avg(Review.rating)).where(Review.product_id == product.id)
    )
