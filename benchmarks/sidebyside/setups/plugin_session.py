"""pytest-pgtemplate: the tests' ``db`` is the plugin's ``pg_session``, nothing more."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession


@pytest.fixture
def db(pg_session: AsyncSession) -> AsyncSession:
    return pg_session
