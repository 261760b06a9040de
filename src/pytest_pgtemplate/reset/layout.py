"""What the restore needs to know about a template, recorded once when the template is built.

It is stored as JSON inside the template (``pgtemplate.state``, key ``layout``), so every clone
carries it and a worker reads it in one query instead of inspecting the catalogs again. Object
ids are stable across ``CREATE DATABASE ... TEMPLATE``, so they identify tables in every clone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Table:
    """A table, partitioned or not, as the template holds it."""

    oid: int
    name: str  # schema-qualified, quoted where needed
    kind: str  # pg_class.relkind: 'r' holds rows, 'p' is partitioned
    leaves: tuple[int, ...]  # the tables holding rows a write through this one may touch
    referrers: tuple[int, ...]  # what a TRUNCATE of it must include (FK referrers, children)
    rank: int  # referenced tables come first: the order seed rows go back in
    seed: str | None = None  # the table holding its seed rows (``pgtemplate.seed_<oid>``)
    columns: str = ""  # quoted column list, generated columns left out (they are recomputed)
    overriding: bool = False  # a GENERATED ALWAYS identity column: OVERRIDING SYSTEM VALUE
    triggers: tuple[tuple[str, str], ...] = ()  # (name, pg_trigger.tgenabled) of user triggers
    rules: tuple[tuple[str, str], ...] = ()  # (name, pg_rewrite.ev_enabled) of its rules


@dataclass(frozen=True)
class Sequence:
    oid: int
    name: str
    last_value: int
    is_called: bool


@dataclass(frozen=True)
class MaterializedView:
    oid: int
    name: str
    populated: bool
    fresh: bool
    """Its rows equal its query's on the template's data: a REFRESH after the restore is exact."""


@dataclass(frozen=True)
class Probe:
    """Catalog state for the probe that stands in for event triggers (no superuser)."""

    digest: str
    counts: tuple[int, ...]
    reference_xid: int
    watched: tuple[int, ...]
    matviews: tuple[tuple[int, int], ...]  # (oid, relfilenode): a plain REFRESH swaps the file


@dataclass(frozen=True)
class Layout:
    superuser: bool
    """Built by a superuser: DDL is marked by event triggers, FKs are skipped while restoring."""
    tables: tuple[Table, ...]
    sequences: tuple[Sequence, ...]
    matviews: tuple[MaterializedView, ...] = ()
    deferred_constraints: tuple[str, ...] = ()
    """INITIALLY DEFERRED constraints (quoted, qualified): what SET CONSTRAINTS goes back to."""
    truncate_all: tuple[str, ...] = ()
    """What ``truncate-all`` TRUNCATEs: every table but alembic's and extensions' own."""
    large_objects_acl: bool = False
    """A template large object has an ACL, which a restore would not bring back: re-clone."""
    probe: Probe | None = None
    sequence_marks: str = "compare"
    """``wal``: the procedure that reads moved sequences from the WAL is installed (superuser,
    pg_walinspect); ``compare``: the check after a test can only compare every sequence."""
    _by_oid: dict[int, tuple[int, Table]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _sequences_by_oid: dict[int, Sequence] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """Built on first use, so that a reset costs what it touched, not a pass over the schema;
    not init fields, so that ``dataclasses.replace`` starts them afresh."""

    def table(self, oid: int) -> Table:
        return self._tables()[oid][1]

    def knows_table(self, oid: int) -> bool:
        return oid in self._tables()

    def position(self, oid: int) -> int:
        """Where the table is in ``tables`` (referenced tables first)."""
        return self._tables()[oid][0]

    def sequence(self, oid: int) -> Sequence | None:
        if not self._sequences_by_oid:
            self._sequences_by_oid.update((s.oid, s) for s in self.sequences)
        return self._sequences_by_oid.get(oid)

    def _tables(self) -> dict[int, tuple[int, Table]]:
        if not self._by_oid:
            self._by_oid.update((t.oid, (i, t)) for i, t in enumerate(self.tables))
        return self._by_oid

    @property
    def wal_marks(self) -> bool:
        return self.superuser and self.sequence_marks == "wal"

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("_by_oid")
        data.pop("_sequences_by_oid")
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Layout:
        data: dict[str, Any] = json.loads(text)
        probe = data.pop("probe")
        return cls(
            superuser=data["superuser"],
            tables=tuple(Table(**_tuples(t)) for t in data["tables"]),
            sequences=tuple(Sequence(**s) for s in data["sequences"]),
            matviews=tuple(MaterializedView(**m) for m in data["matviews"]),
            deferred_constraints=tuple(data["deferred_constraints"]),
            truncate_all=tuple(data["truncate_all"]),
            large_objects_acl=data["large_objects_acl"],
            probe=Probe(**_tuples(probe)) if probe else None,
            sequence_marks=data.get("sequence_marks", "compare"),
        )


def _tuples(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON has lists where the dataclasses hold (hashable) tuples."""
    return {
        key: tuple(tuple(v) if isinstance(v, list) else v for v in value)
        if isinstance(value, list)
        else value
        for key, value in fields.items()
    }
