"""Rows of the ``pgtemplate`` command: typed values for JSON, a text table for people.

JSON keeps real types (booleans, integers, ``null`` for "none"); only the text table turns them
into ``yes``/``no``, ``-`` and ages such as ``2h``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..sweep import Entry

COLUMNS = ("name", "project", "kind", "run", "template", "alive", "size_mb", "age_seconds")
_HEADERS = {"size_mb": "SIZE_MB", "age_seconds": "AGE", "owner_pid": "OWNER"}
MB = 2**20


@dataclass
class Outcome:
    """What to print once the work is done."""

    text: str
    stderr: list[str] = field(default_factory=list)
    status: int = 0


def as_json(rows: list[dict[str, object]]) -> str:
    return json.dumps(rows, indent=2) + "\n"


def row(entry: Entry, size: int | None) -> dict[str, object]:
    """One database; ``size`` in bytes, ``None`` when it could not be measured."""
    marker = entry.marker
    return {
        "name": entry.name,
        "project": marker.project or None,
        "kind": entry.kind,
        "run": marker.run_id or None,
        "template": marker.template or None,
        "alive": entry.alive,
        "size_bytes": size,
        "size_mb": None if size is None else round(size / MB, 1),
        "created": marker.created or None,
        "age_seconds": age_seconds(marker.created),
    }


def age_seconds(created: str, now: datetime | None = None) -> int | None:
    try:
        then = datetime.fromisoformat(created)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))


def total_mb(rows: list[dict[str, object]]) -> float:
    return sum(r["size_bytes"] for r in rows if isinstance(r["size_bytes"], int)) / MB


def table(rows: list[dict[str, object]], columns: Sequence[str] = COLUMNS) -> str:
    cells = [[_cell(column, r[column]) for column in columns] for r in rows]
    headers = [_HEADERS.get(column, column.upper()) for column in columns]
    widths = [max(len(text) for text in column) for column in zip(headers, *cells, strict=True)]
    lines = [
        "  ".join(t.ljust(w) for t, w in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *cells)
    ]
    return "\n".join(lines) + "\n"


def _cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column == "size_mb":
        return f"{value:.1f}"
    if column == "age_seconds" and isinstance(value, int):
        return _age(value)
    return str(value)


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
