"""An alembic project read as alembic reads it, without importing alembic.

Importing alembic costs tens of milliseconds; a run that reuses its template must not pay it.
So the ini is parsed here (``%(here)s`` included), relative paths are resolved from the ini's
directory (as running ``alembic`` next to it would), ``package:path`` locations are found
without executing the package, and the head revisions are read from the revision files' text.
"""

from __future__ import annotations

import ast
import configparser
import importlib.machinery
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigurationError
from ..fingerprint import files_under

_SEPARATORS = {"space": " ", "newline": "\n", "os": os.pathsep, ":": ":", ";": ";"}
_REVISION_FILE = re.compile(r"(?!\.#|__init__)(.*\.py)$")  # alembic's _only_source_rev_file
_ASSIGNMENT = re.compile(r"^(revision|down_revision)\s*(?::[^=]+)?=\s*(.+?)\s*$", re.MULTILINE)
_QUOTED = re.compile(r"""(['"])([^'"\\]*)\1""")
_ENV_READS = re.compile(
    r"""(?:getenv|environ\.get|environ\.setdefault|environ\[)\(?\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""
)


@dataclass
class AlembicScripts:
    """The ``[alembic]`` section of one ini and the directories it names."""

    ini_path: Path
    _parser: configparser.ConfigParser | None = field(default=None, init=False, repr=False)
    _contents: dict[Path, bytes] = field(default_factory=dict, init=False, repr=False)
    """Files read once per instance: the fingerprint and the heads read the same ones."""

    @property
    def here(self) -> Path:
        return self.ini_path.parent

    def option(self, name: str) -> str:
        return str(self._config().get("alembic", name, fallback="")).strip()

    def script_directory(self) -> Path:
        location = self.option("script_location")
        if not location:
            raise ConfigurationError(
                f"{self.ini_path} has no script_location in [alembic]: alembic would not know "
                "where the migrations are"
            )
        path = self.resolve(location)
        if not path.is_dir():
            raise ConfigurationError(
                f"alembic script_location {location!r} (from {self.ini_path}) is not a "
                f"directory: resolved to {str(path)!r}"
            )
        return path

    def version_directories(self) -> list[Path]:
        """``version_locations`` if set (replacing the default, as in alembic), else versions/."""
        listed = self.paths("version_locations")
        return listed or [self.script_directory() / "versions"]

    def prepend_sys_path(self) -> list[Path]:
        return self.paths("prepend_sys_path", legacy=r", *| +|:")

    def paths(self, name: str, legacy: str = r", *| +") -> list[Path]:
        """A list option split as alembic splits it (``path_separator``), each entry resolved."""
        raw = self.option(name)
        if not raw:
            return []
        separator = self.option("path_separator") or self.option("version_path_separator")
        if separator:
            entries = raw.split(_SEPARATORS.get(separator, os.pathsep))
        else:
            entries = re.split(legacy, raw)
        return [self.resolve(entry.strip()) for entry in entries if entry.strip()]

    def resolve(self, location: str) -> Path:
        """An absolute path for a plain path (relative: from the ini's directory) or
        alembic's ``package.module:dir`` resource form."""
        expanded = os.path.expanduser(location)
        if not os.path.isabs(expanded) and ":" in expanded:
            return self._resource(expanded)
        path = Path(expanded)
        return path if path.is_absolute() else (self.here / path).resolve()

    def fingerprint_parts(self) -> list[tuple[str, bytes]]:
        """The ini and every file of the script directory and of other version locations."""
        script_dir = self.script_directory()
        parts = [("alembic.ini", self.ini_path.read_bytes())]
        parts += self._parts(script_dir.parent, files_under(script_dir))
        for extra in self.version_directories():
            if extra.is_dir() and not extra.is_relative_to(script_dir):
                parts += self._parts(extra, files_under(extra), prefix="versions:")
        return parts

    def heads(self) -> tuple[str, ...] | None:
        """Head revision(s), sorted, from the revision files' text; None when unsure."""
        revisions: dict[str, tuple[str, ...]] = {}
        for path in self._revision_files():
            parsed = _revision_of(self._read(path).decode("utf-8", errors="replace"))
            if parsed is None:
                return None
            revisions[parsed[0]] = parsed[1]
        if not revisions:
            return ()
        lower = {down for downs in revisions.values() for down in downs}
        return tuple(sorted(set(revisions) - lower))

    def env_py(self) -> Path:
        return self.script_directory() / "env.py"

    def env_variables_read(self) -> list[str]:
        """Environment variables env.py reads by name: the likely reason it ignores the URL."""
        try:
            text = self.env_py().read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return sorted(set(_ENV_READS.findall(text)))

    def _read(self, path: Path) -> bytes:
        if path not in self._contents:
            self._contents[path] = path.read_bytes()
        return self._contents[path]

    def _parts(self, root: Path, paths: list[Path], prefix: str = "") -> list[tuple[str, bytes]]:
        return [(prefix + p.relative_to(root).as_posix(), self._read(p)) for p in paths]

    def _revision_files(self) -> list[Path]:
        recursive = self.option("recursive_version_locations").lower() in ("true", "1", "yes")
        found: list[Path] = []
        for directory in self.version_directories():
            if not directory.is_dir():
                continue
            candidates = directory.rglob("*.py") if recursive else directory.glob("*.py")
            found += [
                p for p in candidates if p.is_file() and _REVISION_FILE.match(p.name) is not None
            ]
        return sorted(found)

    def _config(self) -> configparser.ConfigParser:
        if self._parser is None:
            parser = configparser.ConfigParser(defaults={"here": str(self.here)})
            try:
                parser.read_string(self.ini_path.read_text(encoding="utf-8"), str(self.ini_path))
            except (OSError, UnicodeDecodeError, configparser.Error) as exc:
                raise ConfigurationError(self._unreadable(exc)) from None
            self._parser = parser
        return self._parser

    def _unreadable(self, exc: Exception) -> str:
        """Why the ini cannot be read, and what to set instead."""
        fix = (
            "Set pgtemplate_alembic_ini to your alembic.ini, or pgtemplate_migrate / "
            "pgtemplate_metadata to build the schema without alembic."
        )
        where = repr(str(self.ini_path))
        if self.ini_path.is_dir():
            inside = self.ini_path / "alembic.ini"
            hint = f" (it holds {str(inside)!r})" if inside.is_file() else ""
            return f"alembic config {where} is a directory, not a file{hint}. {fix}"
        if isinstance(exc, FileNotFoundError):
            return f"alembic config {where} does not exist. {fix}"
        reason = str(exc).splitlines()[0] if isinstance(exc, configparser.Error) else exc
        return f"alembic config {where} cannot be read ({reason}). {fix}"

    def _resource(self, location: str) -> Path:
        """``a.b:dir`` -> the directory ``a/b/dir`` where ``a`` would be imported from.

        alembic imports the package to find it; a fingerprint must not run project code, so
        only the top-level package is located (finders, no execution), the prepend_sys_path
        entries first, as alembic puts them first on sys.path."""
        package, _, inside = location.partition(":")
        top, *rest = package.split(".")
        for base in self._package_roots(top):
            candidate = base.joinpath(*rest, *inside.split(":"))
            if candidate.is_dir():
                return candidate
        raise ConfigurationError(
            f"alembic script location {location!r} (from {self.ini_path}): package {package!r} "
            f"has no directory {inside!r}, or {top!r} cannot be found on sys.path or in "
            "prepend_sys_path"
        )

    def _package_roots(self, top: str) -> list[Path]:
        search = [str(p) for p in self.prepend_sys_path()]
        spec = importlib.machinery.PathFinder.find_spec(top, search) if search else None
        if spec is None:
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                spec = None
        locations = spec.submodule_search_locations if spec is not None else None
        return [Path(location) for location in locations or []]


def _revision_of(text: str) -> tuple[str, tuple[str, ...]] | None:
    """(revision, down revisions) from module-level literals; None if not plain literals."""
    values: dict[str, object] = {}
    for name, expression in _ASSIGNMENT.findall(text):
        quoted = _QUOTED.fullmatch(expression)
        if quoted or expression == "None":
            values.setdefault(name, quoted.group(2) if quoted else None)
            continue
        try:
            values.setdefault(name, ast.literal_eval(expression))
        except (ValueError, SyntaxError):
            return _revision_by_ast(text)
    if "revision" not in values:
        return _revision_by_ast(text)
    return _normalised(values.get("revision"), values.get("down_revision"))


def _revision_by_ast(text: str) -> tuple[str, tuple[str, ...]] | None:
    """Slower fallback for multi-line literals (a merge's down_revision tuple over lines)."""
    values: dict[str, object] = {}
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for node in tree.body:
        target, value = _assigned(node)
        if target in ("revision", "down_revision") and value is not None:
            try:
                values[target] = ast.literal_eval(value)
            except ValueError:
                return None
    return _normalised(values.get("revision"), values.get("down_revision"))


def _assigned(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        return (target.id if isinstance(target, ast.Name) else None), node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


def _normalised(revision: object, down: object) -> tuple[str, tuple[str, ...]] | None:
    if not isinstance(revision, str):
        return None
    if down is None:
        return revision, ()
    if isinstance(down, str):
        return revision, (down,)
    if isinstance(down, (tuple, list)) and all(isinstance(d, str) for d in down):
        return revision, tuple(down)
    return None
