"""A stable hash of everything that decides what the template contains."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_SKIPPED_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def files_under(directory: Path) -> list[Path]:
    """Every file below ``directory`` that can change a migration, in a stable order."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file()
        and path.suffix not in _SKIPPED_SUFFIXES
        and not _SKIPPED_DIRS.intersection(path.relative_to(directory).parts)
    )


def hash_parts(parts: Iterable[tuple[str, bytes]]) -> str:
    """sha256 over (label, content) pairs; labels keep renames and moves significant."""
    digest = hashlib.sha256()
    for label, content in parts:
        for chunk in (label.encode(), content):
            digest.update(len(chunk).to_bytes(8, "big"))
            digest.update(chunk)
    return digest.hexdigest()


def file_parts(root: Path, paths: Iterable[Path]) -> list[tuple[str, bytes]]:
    return [(path.relative_to(root).as_posix(), path.read_bytes()) for path in paths]
