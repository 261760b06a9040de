"""What builds the template: alembic, a project's function, or a SQLAlchemy metadata.

Like pgtestdb's ``Migrator``, each answers which inputs decide the result (the fingerprint)
and how to apply them to an empty database; here each also checks the result before the core
trusts it (``verify``), since a build that ran somewhere else must never be cloned.
"""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from ._alembic import AlembicMigrator
from ._base import Migrator, Verified, describe_error
from ._callable import CallableMigrator
from ._metadata import MetadataMigrator

__all__ = [
    "AlembicMigrator",
    "CallableMigrator",
    "MetadataMigrator",
    "Migrator",
    "Verified",
    "build_migrator",
    "describe_error",
]


def build_migrator(settings: Settings, rootdir: Path) -> Migrator:
    """The migrator the settings ask for: migrate, else metadata, else alembic."""
    if settings.migrate:
        return CallableMigrator(
            settings.migrate,
            settings.export_env,
            rootdir=rootdir,
            fingerprint_paths=settings.fingerprint_paths,
            alembic_ini=settings.alembic_ini,
        )
    if settings.metadata:
        return MetadataMigrator(
            settings.metadata,
            settings.export_env,
            alembic_ini=settings.alembic_ini,
        )
    assert settings.alembic_ini is not None, "resolve() always gives alembic an ini path"
    return AlembicMigrator(settings.alembic_ini, settings.export_env)
