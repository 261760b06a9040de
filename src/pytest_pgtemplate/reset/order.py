"""Table order for the exact reset: referenced tables first, and what a TRUNCATE must include."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import asyncpg


def leaf_dependencies(
    kinds: Mapping[int, str], edges: Iterable[asyncpg.Record]
) -> dict[int, set[int]]:
    """Table -> the tables its foreign keys point at, partitioned ones replaced by their leaves."""
    children: dict[int, list[int]] = {}
    for edge in edges:
        if not edge["fk"] and kinds[edge["target"]] == "p":
            children.setdefault(edge["target"], []).append(edge["source"])

    def leaves(oid: int) -> set[int]:
        if kinds[oid] == "r":
            return {oid}
        return {leaf for child in children.get(oid, ()) for leaf in leaves(child)}

    depends: dict[int, set[int]] = {}
    for edge in (e for e in edges if e["fk"]):
        for source in leaves(edge["source"]):
            depends.setdefault(source, set()).update(leaves(edge["target"]) - {source})
    return depends


def parents_first(tables: Mapping[int, Any], depends: Mapping[int, set[int]]) -> list[int]:
    """Referenced tables before referencing ones; an FK cycle is broken in name order."""
    placed: set[int] = set()
    order: list[int] = []
    pending = sorted(tables, key=lambda oid: tables[oid]["name"])
    while pending:
        ready = [oid for oid in pending if depends.get(oid, set()) <= placed] or pending[:1]
        order += ready
        placed.update(ready)
        pending = [oid for oid in pending if oid not in placed]
    return order


def closure(neighbours: Callable[[int], Iterable[int]], roots: Iterable[int]) -> set[int]:
    """Every table reachable from ``roots``; ``neighbours`` is asked only for those reached."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        oid = stack.pop()
        if oid not in seen:
            seen.add(oid)
            stack.extend(neighbours(oid))
    return seen
