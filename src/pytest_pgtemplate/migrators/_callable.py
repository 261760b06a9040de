"""``pgtemplate_migrate = package.module:function``: the project's own code builds the template."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, MigrationError
from ..fingerprint import PackageFiles, declared_files, file_parts, labelled, package_files
from ..urls import with_driver
from ._base import Verified, describe_error, exported, heads_match, run_coroutine
from ._checks import check_contents
from ._scripts import AlembicScripts

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


@dataclass
class CallableMigrator:
    """Called with the template's ``postgresql+asyncpg://`` URL, sync or async.

    Its fingerprint is ``fingerprint_paths`` when declared (relative to ``rootdir``), else
    the function's whole top-level package; plus, when an alembic.ini is known, its script
    directory, so that editing a migration the function runs always rebuilds the template.
    """

    spec: str
    export_env: tuple[str, ...] = ()
    rootdir: Path = field(default_factory=Path.cwd)
    fingerprint_paths: tuple[str, ...] = ()
    alembic_ini: Path | None = None
    _package: PackageFiles | None = field(default=None, init=False, repr=False)

    def describe(self) -> str:
        return self.spec

    def fingerprint_parts(self) -> list[tuple[str, bytes]]:
        parts = [("spec", self.spec.encode())]
        if self.fingerprint_paths:
            files = declared_files(self.rootdir, self.fingerprint_paths)
            parts += labelled(self.rootdir, files)
        else:
            package = self.package()
            parts += file_parts(package.root.parent, package.files)
        return parts + self._alembic_parts()

    def fingerprint_note(self) -> str:
        alembic = f" + alembic scripts of {self.alembic_ini}" if self.alembic_ini else ""
        if self.fingerprint_paths:
            count = len(declared_files(self.rootdir, self.fingerprint_paths))
            paths = " ".join(self.fingerprint_paths)
            return f"fingerprint: {count} file(s) of fingerprint_paths ({paths}){alembic}"
        package = self.package()
        return (
            f"fingerprint: {len(package.files)} .py file(s) under {package.root}{alembic}; "
            "WARNING: a change elsewhere (models or migrations outside it) will not rebuild the "
            "template: declare what builds it with pgtemplate_fingerprint_paths"
        )

    def package(self) -> PackageFiles:
        if self._package is None:
            try:
                self._package = package_files(self._parts()[0])
            except ConfigurationError as exc:
                raise ConfigurationError(f"pgtemplate_migrate {self.spec!r}: {exc}") from None
        return self._package

    def expected_heads(self) -> tuple[str, ...] | None:
        return AlembicScripts(self.alembic_ini).heads() if self.alembic_ini else None

    def heads_match(self, recorded: str) -> bool:
        return heads_match(self.expected_heads(), recorded, required=False)

    def migrate(self, url: URL) -> None:
        function = self._load()
        target = with_driver(url, "asyncpg")
        with exported(self.export_env, target):
            try:
                result = function(target)
                if inspect.isawaitable(result):
                    run_coroutine(result)
            except BaseException as exc:
                raise MigrationError(
                    f"{self.spec} raised {describe_error(exc)}. The half-built template was "
                    "dropped; fix the function and run again."
                ) from exc

    def verify(self, url: URL) -> Verified:
        return check_contents(url, self.spec, self.alembic_ini)

    def _alembic_parts(self) -> list[tuple[str, bytes]]:
        if self.alembic_ini is None:
            return []
        return [(f"alembic:{label}", data) for label, data in self._scripts().fingerprint_parts()]

    def _scripts(self) -> AlembicScripts:
        assert self.alembic_ini is not None
        return AlembicScripts(self.alembic_ini)

    def _parts(self) -> tuple[str, str]:
        module_name, _, attribute = self.spec.partition(":")
        if not module_name or not attribute:
            raise ConfigurationError(
                f"pgtemplate_migrate must look like 'package.module:function' (got {self.spec!r})"
            )
        return module_name, attribute

    def _load(self) -> Callable[[str], Any]:
        module_name, attribute = self._parts()
        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(
                f"pgtemplate_migrate {self.spec!r} cannot be loaded: {exc}"
            ) from None
        if not callable(function):
            raise ConfigurationError(f"pgtemplate_migrate {self.spec!r} is not callable")
        return function  # type: ignore[no-any-return]
