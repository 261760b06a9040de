"""The soak's own databases on the shared server: found by marker or by run id, never guessed.

A database is the soak's when the plugin's marker names the soak's unique project, or, for one
a SIGKILL left without its marker (killed between ``CREATE DATABASE`` and ``COMMENT``), when its
name is ``pgtemplate_<run id>_...`` for a run id one of the soak's processes recorded, or is the
soak's template's name. Nothing else on the server is read beyond its name and comment, counted
or dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

_DATABASES = """
SELECT datname, shobj_description(oid, 'pg_database'), datistemplate
FROM pg_database WHERE datname LIKE 'pgtemplate\\_%'
"""


@dataclass(frozen=True)
class OwnDatabase:
    name: str
    kind: str
    """The marker's kind (``template``, ``worker``, ``kept``), or ``unmarked``."""
    finished_template: bool


def _marker(comment: str | None) -> dict[str, str]:
    try:
        fields = json.loads(comment or "")["pgtemplate"]
    except (ValueError, KeyError, TypeError):
        return {}
    return fields if isinstance(fields, dict) else {}


def own_databases(
    url: str, project: str, run_ids: Iterable[str], templates: Iterable[str]
) -> list[OwnDatabase]:
    """Every database of this soak on the server, marked or not.

    ``templates``: the template names the soak's processes reported (the fingerprint is new to
    the server, made so by a random marker in the soak's migration).
    """
    prefixes = tuple(f"pgtemplate_{run_id}_" for run_id in run_ids)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(_DATABASES).fetchall()
    markers = {name: _marker(comment) for name, comment, _ in rows}
    template_names = set(templates)
    found = []
    for name, _, is_template in rows:
        marker = markers[name]
        if marker.get("project") == project or (
            not marker and (name.startswith(prefixes) or name in template_names)
        ):
            kind = marker.get("kind", "unmarked")
            found.append(OwnDatabase(name, kind, kind == "template" and bool(is_template)))
    return sorted(found, key=lambda database: database.name)


def drop_own(url: str, databases: Iterable[OwnDatabase]) -> list[str]:
    """Drop the given databases (only ever the soak's own); returns what could not be dropped."""
    problems = []
    with psycopg.connect(url, autocommit=True) as conn:
        for database in databases:
            quoted = '"' + database.name.replace('"', '""') + '"'
            try:
                conn.execute(f"ALTER DATABASE {quoted} WITH IS_TEMPLATE false")
                conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            except psycopg.errors.InvalidCatalogName:
                continue  # gone meanwhile
            except psycopg.Error as exc:
                problems.append(f"{database.name}: {exc}")
    return problems
