"""A stable hash of everything that decides what the template contains."""

from __future__ import annotations

import glob
import hashlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError

_SKIPPED_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".git"}
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


def declared_files(rootdir: Path, patterns: Iterable[str]) -> list[Path]:
    """``pgtemplate_fingerprint_paths``: files, directories (every file below) and globs
    (``**`` included), relative to the rootdir. An entry that matches nothing is an error:
    a typo would otherwise leave the template stale, silently."""
    found: set[Path] = set()
    for pattern in patterns:
        absolute = pattern if Path(pattern).is_absolute() else str(rootdir / pattern)
        matches = [Path(m) for m in glob.glob(absolute, recursive=True)]
        files = [f for m in matches for f in ([m] if m.is_file() else files_under(m))]
        files = [f for f in files if f.suffix not in _SKIPPED_SUFFIXES]
        if not files:
            raise ConfigurationError(
                f"pgtemplate_fingerprint_paths entry {pattern!r} matches no file under "
                f"{rootdir}: fix the path (relative to the rootdir), or the template would not "
                "follow what it was built from"
            )
        found.update(files)
    return sorted(found)


def labelled(rootdir: Path, paths: Iterable[Path]) -> list[tuple[str, bytes]]:
    """Labels relative to the rootdir where possible, so a moved checkout keeps its template."""
    parts = []
    for path in paths:
        label = path.relative_to(rootdir) if path.is_relative_to(rootdir) else path
        parts.append((label.as_posix(), path.read_bytes()))
    return parts


@dataclass(frozen=True)
class PackageFiles:
    """What a callable's fingerprint covers when no paths are declared: its top-level package."""

    root: Path
    files: list[Path]


def package_files(module_name: str) -> PackageFiles:
    """Every ``.py`` file of ``module_name``'s top-level package, found without importing it."""
    top = module_name.split(".", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ConfigurationError(f"cannot find the module {top!r} on sys.path")
    if spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations)))
        return PackageFiles(base, [p for p in files_under(base) if p.suffix == ".py"])
    if spec.origin is None:
        raise ConfigurationError(f"module {top!r} has no source file to fingerprint")
    origin = Path(spec.origin)
    return PackageFiles(origin.parent, [origin])
