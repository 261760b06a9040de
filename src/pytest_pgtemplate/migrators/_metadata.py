"""``pgtemplate_metadata = package.module:Base.metadata``: ``create_all`` builds the template.

Its fingerprint is the DDL that metadata compiles to for PostgreSQL, not the source files: a
model change rebuilds the template, an edit anywhere else does not.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, MigrationError
from ..naming import quote_ident
from ..urls import with_driver
from ._base import Verified, describe_error, exported, heads_match, run_coroutine
from ._checks import check_contents
from ._scripts import AlembicScripts

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import URL


@dataclass
class MetadataMigrator:
    spec: str
    export_env: tuple[str, ...] = ()
    alembic_ini: Path | None = None
    _metadata: MetaData | None = field(default=None, init=False, repr=False)

    def describe(self) -> str:
        return f"create_all of {self.spec}"

    def fingerprint_parts(self) -> list[tuple[str, bytes]]:
        parts = [("spec", self.spec.encode()), *metadata_ddl(self.metadata())]
        if self.alembic_ini is not None:
            scripts = AlembicScripts(self.alembic_ini).fingerprint_parts()
            parts += [(f"alembic:{label}", data) for label, data in scripts]
        return parts

    def fingerprint_note(self) -> str:
        tables = len(self.metadata().tables)
        return f"fingerprint: compiled DDL of {self.spec} ({tables} table(s))"

    def expected_heads(self) -> tuple[str, ...] | None:
        return AlembicScripts(self.alembic_ini).heads() if self.alembic_ini else None

    def heads_match(self, recorded: str) -> bool:
        return heads_match(self.expected_heads(), recorded, required=False)

    def metadata(self) -> MetaData:
        if self._metadata is None:
            self._metadata = _load_metadata(self.spec)
        return self._metadata

    def migrate(self, url: URL) -> None:
        metadata = self.metadata()
        target = with_driver(url, "asyncpg")
        with exported(self.export_env, target):
            try:
                run_coroutine(_create_all(metadata, target))
            except BaseException as exc:
                raise MigrationError(
                    f"create_all of {self.spec} failed: {describe_error(exc)}. The half-built "
                    "template was dropped; fix the models and run again."
                ) from exc

    def verify(self, url: URL) -> Verified:
        return check_contents(url, f"create_all of {self.spec}", self.alembic_ini)


def metadata_ddl(metadata: MetaData) -> list[tuple[str, bytes]]:
    """CREATE statements (schemas, types, sequences, tables, indexes, comments), sorted."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateSequence, CreateTable

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    statements: list[str] = [f"schema {s}" for s in sorted(_schemas(metadata))]
    statements += _enum_ddl(metadata, dialect)
    for sequence in metadata._sequences.values():
        statements.append(str(CreateSequence(sequence).compile(dialect=dialect)))
    for table in metadata.tables.values():
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        statements += [str(CreateIndex(i).compile(dialect=dialect)) for i in table.indexes]
        statements += _comments(table)
    return [("ddl", "\n".join(" ".join(s.split()) for s in sorted(statements)).encode())]


def _enum_ddl(metadata: MetaData, dialect: Any) -> list[str]:
    from sqlalchemy import Enum

    found = set()
    for table in metadata.tables.values():
        for column in table.columns:
            kind = column.type
            if isinstance(kind, Enum) and kind.native_enum:
                found.add(f"enum {kind.schema}.{kind.name} {list(kind.enums)!r}")
    return sorted(found)


def _comments(table: Any) -> list[str]:
    lines = [f"comment {table.fullname} {table.comment!r}"] if table.comment else []
    lines += [
        f"comment {table.fullname}.{c.name} {c.comment!r}" for c in table.columns if c.comment
    ]
    return lines


def _schemas(metadata: MetaData) -> set[str]:
    from sqlalchemy import Enum

    schemas = {table.schema for table in metadata.tables.values() if table.schema}
    for table in metadata.tables.values():
        schemas.update(
            c.type.schema for c in table.columns if isinstance(c.type, Enum) and c.type.schema
        )
    if metadata.schema:
        schemas.add(metadata.schema)
    return schemas


async def _create_all(metadata: MetaData, url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for schema in sorted(_schemas(metadata)):
                await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"))
            await conn.run_sync(metadata.create_all)
    finally:
        await engine.dispose()


def _load_metadata(spec: str) -> MetaData:
    from sqlalchemy import MetaData

    module_name, _, attributes = spec.partition(":")
    if not module_name or not attributes:
        raise ConfigurationError(
            f"pgtemplate_metadata must look like 'package.module:Base.metadata' (got {spec!r})"
        )
    try:
        found: Any = importlib.import_module(module_name)
        for attribute in attributes.split("."):
            found = getattr(found, attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"pgtemplate_metadata {spec!r} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(found, MetaData):
        hint = (
            f"{spec}.metadata"
            if isinstance(getattr(found, "metadata", None), MetaData)
            else "myapp.models:Base.metadata"
        )
        raise ConfigurationError(
            f"pgtemplate_metadata {spec!r} is not a SQLAlchemy MetaData "
            f"({type(found).__name__}); expected e.g. {hint!r}"
        )
    return found
