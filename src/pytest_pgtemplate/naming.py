"""Names and markers of the databases the plugin owns.

Every database the plugin creates starts with ``pgtemplate_`` and carries a JSON comment, so
that clean-up can tell the plugin's databases from anybody else's and never touch the latter.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

PREFIX = "pgtemplate_"
MAX_IDENTIFIER_BYTES = 63
_UNSAFE = re.compile(r"[^a-z0-9_]+")

Kind = Literal["template", "worker", "kept"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    """12 hex digits (48 bits): unique across concurrent runs and CI shards on one server.
    (``os.urandom`` is what ``secrets.token_hex`` reads; importing ``secrets`` loads OpenSSL.)"""
    return os.urandom(6).hex()


def template_name(fingerprint: str) -> str:
    return f"{PREFIX}tpl_{fingerprint[:20]}"


def worker_database_name(run_id: str, worker_id: str) -> str:
    """``pgtemplate_<run>_<worker>``, e.g. ``pgtemplate_3f2a9c1b7d4e_gw0``."""
    safe_run = _UNSAFE.sub("", run_id.lower())[:16]
    safe_worker = _UNSAFE.sub("_", worker_id.lower())[:24]
    name = f"{PREFIX}{safe_run}_{safe_worker}"
    assert len(name.encode()) <= MAX_IDENTIFIER_BYTES, name
    return name


def spare_name(worker_database: str) -> str:
    """The pre-cloned database that ``recreate`` swaps in."""
    return f"{worker_database}_spare"


def empty_name(worker_database: str, number: int) -> str:
    """A database from template0 for one test (``pg_empty_database``): migration tests."""
    return f"{worker_database}_empty{number}"


def kept_name(worker_database: str, number: int) -> str:
    """A copy of a failed test's database, kept for inspection (``--pgtemplate-keep-failed``)."""
    return f"{worker_database}_failed{number}"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class DatabaseTag:
    """What the plugin writes into ``COMMENT ON DATABASE`` of databases it creates."""

    kind: Kind
    fingerprint: str = ""
    run_id: str = ""
    template: str = ""
    owner: str = ""
    """The worker database whose liveness lock keeps this database alive (workers, spares)."""
    project: str = ""
    created: str = ""
    """ISO 8601, UTC."""
    alembic: str = ""
    """Templates: the alembic revision(s) the template holds, space separated."""

    def to_comment(self) -> str:
        fields = {k: v for k, v in vars(self).items() if v}
        return json.dumps({"pgtemplate": fields}, sort_keys=True)

    @classmethod
    def from_comment(cls, comment: str | None) -> DatabaseTag | None:
        """Parse a comment; ``None`` for anything the plugin did not write."""
        try:
            fields: Any = json.loads(comment or "")["pgtemplate"]
            return cls(**fields)
        except (ValueError, KeyError, TypeError):
            return None
