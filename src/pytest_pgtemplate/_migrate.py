"""Kept for imports of the former single module: the migrators live in ``migrators/``."""

from __future__ import annotations

from .migrators import (
    AlembicMigrator,
    CallableMigrator,
    MetadataMigrator,
    Migrator,
    Verified,
    build_migrator,
    describe_error,
)

__all__ = [
    "AlembicMigrator",
    "CallableMigrator",
    "MetadataMigrator",
    "Migrator",
    "Verified",
    "build_migrator",
    "describe_error",
]
