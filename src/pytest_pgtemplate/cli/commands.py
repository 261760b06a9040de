"""``pgtemplate list`` and ``pgtemplate gc``: see and clean the plugin's databases on a server.

Reads the server URL and the project the way the plugin does, and never touches a database
without the plugin's marker. Talking to the server and printing are kept apart, so a reader
that goes away (``pgtemplate list | head -1``) can only interrupt the printing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import asyncpg

from ..errors import PgTemplateError
from ..server.admin import connect
from ..sweep import Entry, drop_entries, inventory, sweepable
from ..urls import parse_server_url
from .config import project_here, server_url
from .table import row, table, total_mb

CONNECT_TIMEOUT = 10.0
EXIT_REFUSED, EXIT_ERROR, EXIT_SIGPIPE, EXIT_INTERRUPTED = 1, 2, 141, 130

_EPILOG = """\
options may come before or after the subcommand:
`pgtemplate --url X list` is `pgtemplate list --url X`.

server: --url, else PGTEMPLATE_URL, else pgtemplate_url in pytest's config file, found from the
current directory as pytest finds it (pytest.toml, pytest.ini, pyproject.toml, tox.ini, setup.cfg).

project: every database the plugin creates names its project (pgtemplate_project, else
[project] name in the rootdir's pyproject.toml, else the rootdir's name). `list` shows every
project unless --project or --run is given. `gc` touches only the current directory's project
unless --project, --run or --all-projects is given; that project is found as the plugin finds it:
PGTEMPLATE_PROJECT, pgtemplate_project in pytest's config file, [project] name, rootdir's name.

ALIVE: a worker database (or spare) is alive while its run's process lives; a template is alive
while a live run clones from it. SIZE_MB is the database's size on disk (pg_database_size).

exit status: 0 done; 1 the server refused to drop some databases (one line each on stderr);
2 a usage, configuration or connection error (one line on stderr); 141 the reader of stdout
went away (e.g. `| head -1`), silently.
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Options:
    command: str
    url: str | None = None
    json: bool = False
    project: str | None = None
    run: str | None = None
    all_projects: bool = False
    dry_run: bool = False
    kept: bool = False
    templates: bool = False


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


@dataclass
class Outcome:
    """What to print once the server work is done."""

    text: str
    stderr: list[str] = field(default_factory=list)
    status: int = 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options = _options(parser, parser.parse_args(argv))
    try:
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


def _parser() -> _Parser:
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--url", help="server URL (default: PGTEMPLATE_URL, then pytest's config)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument(
        "--project", metavar="NAME", help="only this project's databases (gc: see below)"
    )
    common.add_argument("--run", metavar="ID", help="only the databases of this run id")
    common.add_argument(
        "--all-projects", action="store_true", help="gc: every project's, not only this directory's"
    )
    gc_only = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    gc_only.add_argument("--dry-run", action="store_true", help="gc: only show what would go")
    gc_only.add_argument(
        "--kept", action="store_true", help="gc: also --pgtemplate-keep-failed copies"
    )
    gc_only.add_argument(
        "--templates", action="store_true", help="gc: also templates that no live run clones"
    )
    parser = _Parser(
        prog="pgtemplate",
        description="See and clean pytest-pgtemplate's databases on a PostgreSQL server.",
        epilog=_EPILOG,
        parents=[common, gc_only],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,gc}")
    for name, parents, summary in (
        ("list", [common], "templates, worker databases and kept copies, with sizes"),
        ("gc", [common, gc_only], "drop worker databases of runs that are gone"),
    ):
        commands.add_parser(
            name,
            parents=parents,
            help=summary,
            description=summary,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    return parser


def _options(parser: _Parser, namespace: argparse.Namespace) -> Options:
    options = Options(**vars(namespace))
    if options.command == "list" and (options.dry_run or options.kept or options.templates):
        parser.error("--dry-run, --kept and --templates apply to gc only")
    if options.all_projects and options.project is not None:
        parser.error("give --project NAME or --all-projects, not both")
    return options


async def _command(options: Options) -> Outcome:
    url = parse_server_url(server_url(options.url))
    admin = await connect(url, timeout=CONNECT_TIMEOUT)
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
    return Outcome(_json(rows) if options.json else table(rows))


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
        return Outcome(_json(rows), refused, EXIT_REFUSED if refused else 0)
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


def _json(rows: list[dict[str, object]]) -> str:
    return json.dumps(rows, indent=2) + "\n"
