"""``pgtemplate list`` and ``pgtemplate gc``: see and clean the plugin's databases on a server.

Reads the server URL and the project the way the plugin does, and never touches a database
without the plugin's marker. Talking to the server and printing are kept apart, so a reader
that goes away (``pgtemplate list | head -1``) can only interrupt the printing. ``cache`` (the
own servers' data directories) is in ``cache``, the command line in ``options``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import URL

from ..errors import PgTemplateError
from ..server.admin import UrlSource, connect
from ..sweep import Entry, drop_entries, inventory, sweepable
from ..urls import parse_server_url
from . import cache
from .config import cache_here, project_here, rootdir_here, server_url, settings_here
from .options import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_REFUSED, EXIT_SIGPIPE, Options, parse
from .table import Outcome, as_json, row, table, total_mb

CONNECT_TIMEOUT = 10.0
_HOW_TO_FIX = (
    "Pass --url (or set PGTEMPLATE_URL, or pgtemplate_url in pytest's config file) with the URL "
    "of a running server's maintenance database, e.g. "
    "postgresql://postgres@127.0.0.1:5432/postgres; or --own for a live run's own server"
)
_OWN_FIX = "The run may have just ended: `pgtemplate cache list` shows the live ones."


@dataclass(frozen=True)
class Scope:
    """Which databases a command looks at: one project, one run, or both; empty means all."""

    project: str | None = None
    run: str | None = None
    note: str = ""

    def __contains__(self, entry: Entry) -> bool:
        return (self.project is None or entry.marker.project == self.project) and (
            self.run is None or entry.marker.run_id == self.run
        )

    def describe(self) -> str:
        parts = [f"project {self.project!r}{self.note}"] if self.project is not None else []
        parts += [f"run {self.run}"] if self.run is not None else []
        return ", ".join(parts) or "every project"


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    try:
        if options.command == "cache":
            outcome = cache.run(options, cache_here(options.cache_dir))
        elif options.command == "fingerprint":
            outcome = _fingerprint(options)
        else:
            outcome = asyncio.run(_command(options))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except PgTemplateError as exc:
        return _fail(str(exc))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    status = _emit(outcome.text)
    for line in outcome.stderr:
        print(f"pgtemplate: {line}", file=sys.stderr)
    return status or outcome.status


def _fingerprint(options: Options) -> Outcome:
    from ..migrators import build_migrator
    from ..template import migrations_key

    migrator = build_migrator(settings_here(), rootdir_here())
    key = migrations_key(migrator)
    if options.json:
        return Outcome(as_json([{"fingerprint": key, "from": migrator.describe()}]))
    return Outcome(f"{key}\n")


def _fail(message: str) -> int:
    print("pgtemplate: " + " ".join(message.split()), file=sys.stderr)
    return EXIT_ERROR


def _emit(text: str) -> int:
    """Print; a closed pipe ends quietly (the Python docs' recipe for SIGPIPE)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The interpreter flushes stdout again at exit: point it at devnull so that cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_SIGPIPE
    return 0


def _server(options: Options) -> tuple[URL, UrlSource]:
    """The server to work on, and how errors name where its URL came from."""
    if options.own or options.owner is not None:
        own = cache.own_server(cache_here(options.cache_dir), options.owner)
        return parse_server_url(own.url, "--own"), _source("--own", _OWN_FIX)
    raw, given_as = server_url(options.url)
    return parse_server_url(raw, given_as), _source(given_as, _HOW_TO_FIX)


def _source(given_as: str, how_to_fix: str) -> UrlSource:
    busy = "wait for other clients to finish"
    return UrlSource(given_as, how_to_fix, fewer_clients=busy, elsewhere="")


async def _command(options: Options) -> Outcome:
    url, source = _server(options)
    admin = await connect(url, CONNECT_TIMEOUT, source)
    try:
        entries = await inventory(admin)
        if options.command == "list":
            return await _list(admin, entries, options)
        return await _gc(admin, entries, options)
    finally:
        await admin.close()


async def _list(admin: asyncpg.Connection, entries: list[Entry], options: Options) -> Outcome:
    scope = Scope(options.project, options.run)
    shown = sorted((e for e in entries if e in scope), key=_listing_order)
    rows = [row(entry, size) for entry, size in zip(shown, await _sizes(admin, shown), strict=True)]
    return Outcome(as_json(rows) if options.json else table(rows))


async def _gc(admin: asyncpg.Connection, entries: list[Entry], options: Options) -> Outcome:
    scope = _gc_scope(options)
    doomed = [e for e in _garbage(entries, options) if e in scope]
    elsewhere = len(_garbage(entries, options)) - len(doomed)
    rows = [
        row(entry, size) for entry, size in zip(doomed, await _sizes(admin, doomed), strict=True)
    ]
    if options.dry_run:
        dropped: set[str] = set()
        refused: list[str] = []
    else:
        result = await drop_entries(admin, doomed)
        dropped = {e.name for e in result.dropped}
        refused = [f"not dropped: {line}" for line in result.refused]
    for entry_row in rows:
        entry_row["dropped"] = entry_row["name"] in dropped
    if options.json:
        return Outcome(as_json(rows), refused, EXIT_REFUSED if refused else 0)
    text = _gc_text(rows, options.dry_run, scope)
    if elsewhere and scope.run is None:
        text += f"{elsewhere} more in other projects: --project NAME or --all-projects\n"
    return Outcome(text, refused, EXIT_REFUSED if refused else 0)


def _gc_text(rows: list[dict[str, object]], dry_run: bool, scope: Scope) -> str:
    if not rows:
        return f"nothing to drop ({scope.describe()})\n"
    if dry_run:
        return f"would drop {_count(rows)} ({scope.describe()}):\n" + table(rows)
    gone = [r for r in rows if r["dropped"]]
    text = f"dropped {_count(gone)} ({scope.describe()}):\n" + table(gone) if gone else ""
    left = [r for r in rows if not r["dropped"]]
    if left:
        text += f"left {_count(left)}: a live run claimed it meanwhile, or see stderr:\n"
        text += table(left)
    return text or f"dropped nothing ({scope.describe()})\n"


def _count(rows: list[dict[str, object]]) -> str:
    return f"{len(rows)} database(s), {total_mb(rows):.1f} MB"


def _garbage(entries: list[Entry], options: Options) -> list[Entry]:
    """What a sweep drops (dead workers, abandoned builds), plus the kinds asked for."""
    dead = {entry.name for entry in sweepable(entries)}
    chosen = [
        entry
        for entry in entries
        if entry.name in dead
        or (options.kept and entry.kind == "kept")
        or (options.templates and entry.kind == "template" and not entry.alive)
    ]
    return sorted(chosen, key=_listing_order)


def _gc_scope(options: Options) -> Scope:
    if options.project is not None or options.run is not None or options.all_projects:
        return Scope(options.project, options.run)
    return Scope(project_here(), note=", this directory's")


async def _sizes(admin: asyncpg.Connection, entries: list[Entry]) -> list[int | None]:
    """Bytes on disk; ``None`` for a database gone meanwhile or one the role may not measure."""
    sizes: list[int | None] = []
    for entry in entries:
        try:
            size = await admin.fetchval(
                "SELECT pg_database_size(oid) FROM pg_database WHERE datname = $1", entry.name
            )
        except asyncpg.PostgresError:
            size = None
        sizes.append(size)
    return sizes


def _listing_order(entry: Entry) -> tuple[str, int, str]:
    kinds = ("template", "worker", "kept")
    rank = kinds.index(entry.kind) if entry.kind in kinds else len(kinds)
    return (entry.marker.project, rank, entry.name)
