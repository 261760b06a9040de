"""Trust checks shared by the migrators that are not alembic itself (callable, metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MigrationError
from ._base import Verified
from ._failures import elsewhere_message, empty_message
from ._inspect import inspect_database
from ._scripts import AlembicScripts

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


def check_contents(url: URL, what: str, alembic_ini: Path | None) -> Verified:
    """At least one object of the application's (a table, a function, a type, an extension, a
    schema); if alembic ran, the script directory's head(s)."""
    contents = inspect_database(url)
    if contents.objects == 0:
        raise MigrationError(empty_message(str(url.database), what))
    if alembic_ini is not None and contents.revisions is not None:
        scripts = AlembicScripts(alembic_ini)
        heads = _heads(alembic_ini)
        if contents.revisions != heads:
            raise MigrationError(
                elsewhere_message(
                    str(url.database), contents.revisions, heads, scripts.env_variables_read()
                )
            )
    return contents.verified()


def _heads(alembic_ini: Path) -> tuple[str, ...]:
    from ._alembic import AlembicMigrator

    return AlembicMigrator(alembic_ini).authoritative_heads()
