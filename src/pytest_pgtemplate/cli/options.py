"""The ``pgtemplate`` command line: its subcommands, options and usage errors, in one line each."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from .._version import __version__

EXIT_REFUSED, EXIT_ERROR, EXIT_SIGPIPE, EXIT_INTERRUPTED = 1, 2, 141, 130

EPILOG = """\
options may come before or after the subcommand:
`pgtemplate --url X list` is `pgtemplate list --url X`.

server: --url, else PGTEMPLATE_URL, else pgtemplate_url in pytest's config file, found from the
current directory as pytest finds it (pytest.toml, pytest.ini, pyproject.toml, tox.ini, setup.cfg).
--own instead: the plugin's own server of a run that is live now (see `pgtemplate cache list`;
--owner PID picks one when several runs have one).

project: every database the plugin creates names its project (pgtemplate_project, else
[project] name in the rootdir's pyproject.toml, else the rootdir's name). `list` shows every
project unless --project or --run is given. `gc` touches only the current directory's project
unless --project, --run or --all-projects is given; that project is found as the plugin finds it:
PGTEMPLATE_PROJECT, pgtemplate_project in pytest's config file, [project] name, rootdir's name.

ALIVE: a worker database (or spare) is alive while its run's process lives; a template is alive
while a live run clones from it. SIZE_MB is the database's size on disk (pg_database_size).

cache: the plugin's own servers keep their data directories in slots, <cache>/<major>/slot<N>
(--cache-dir, else PGTEMPLATE_CACHE_DIR, else pgtemplate_cache_dir in pytest's config file, else
the plugin's default). `cache list` shows them; `cache clean` removes those no live run owns, so
the next run starts a fresh server (initdb). A slot a live run owns is never touched.

fingerprint: what the template is built from (the migrations as the plugin reads them from
pytest's config here, and the plugin's major): it changes exactly when a rebuild is due, so a CI
cache of pgtemplate_archive_dir keyed on it is never stale (the archive holds one entry per
server major and role beside it).

exit status: 0 done; 1 the server refused to drop some databases, or some data directories could
not be removed (one line each on stderr); 2 a usage, configuration or connection error (one line
on stderr); 141 the reader of stdout went away (e.g. `| head -1`), silently.
"""

_SERVER_FLAGS = {
    "url": "--url",
    "project": "--project",
    "run": "--run",
    "all_projects": "--all-projects",
    "own": "--own",
    "owner": "--owner",
    "kept": "--kept",
    "templates": "--templates",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Options:
    command: str
    cache_command: str | None = None
    url: str | None = None
    json: bool = False
    project: str | None = None
    run: str | None = None
    all_projects: bool = False
    dry_run: bool = False
    kept: bool = False
    templates: bool = False
    own: bool = False
    owner: int | None = None
    cache_dir: str | None = None


def parse(argv: Sequence[str] | None) -> Options:
    parser = _parser()
    options = Options(**vars(parser.parse_args(argv)))
    problem = _misplaced(options)
    if problem:
        parser.error(problem)
    return options


def _misplaced(options: Options) -> str | None:
    """Options given to a subcommand they do not apply to, and options that exclude each other."""
    if options.command == "cache":
        given = [flag for name, flag in _SERVER_FLAGS.items() if getattr(options, name)]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            return f"{', '.join(given)} {verb} to list and gc, not to cache"
        if options.cache_command == "list" and options.dry_run:
            return "--dry-run applies to gc and cache clean only"
    if options.command == "list" and (options.dry_run or options.kept or options.templates):
        return "--dry-run, --kept and --templates apply to gc only"
    if options.all_projects and options.project is not None:
        return "give --project NAME or --all-projects, not both"
    if options.url is not None and (options.own or options.owner is not None):
        return "give --url or --own, not both"
    return None


def _parser() -> _Parser:
    shared, server, gc_only, dry = (_part() for _ in range(4))
    shared.add_argument("--json", action="store_true", help="machine-readable output")
    shared.add_argument("--cache-dir", metavar="DIR", help="the own servers' cache (see below)")
    _server_options(server)
    gc_only.add_argument(
        "--kept", action="store_true", help="gc: also --pgtemplate-keep-failed copies"
    )
    gc_only.add_argument(
        "--templates", action="store_true", help="gc: also templates that no live run clones"
    )
    dry.add_argument("--dry-run", action="store_true", help="gc, cache clean: only show what goes")
    parser = _Parser(
        prog="pgtemplate",
        parents=[shared, server, gc_only, dry],
        description="See and clean pytest-pgtemplate's databases, and its own servers' cache.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pgtemplate {__version__}")
    choices = "{list,gc,cache,fingerprint}"
    commands = parser.add_subparsers(dest="command", required=True, metavar=choices)
    summary = "templates, worker databases and kept copies, with sizes"
    _subcommand(commands, "list", [shared, server], summary)
    summary = "drop worker databases of runs that are gone"
    _subcommand(commands, "gc", [shared, server, gc_only, dry], summary)
    summary = "the migrations' hash, as a CI cache key for pgtemplate_archive_dir"
    _subcommand(commands, "fingerprint", [shared], summary)
    cache = _subcommand(commands, "cache", [shared, dry], "the own servers' data directories")
    caches = cache.add_subparsers(dest="cache_command", required=True, metavar="{list,clean}")
    _subcommand(caches, "list", [shared], "slots: major, owner, port, size")
    _subcommand(caches, "clean", [shared, dry], "remove the slots no live run owns")
    return parser


def _subcommand(
    commands: argparse._SubParsersAction[_Parser], name: str, parents: list[_Parser], summary: str
) -> _Parser:
    return commands.add_parser(
        name,
        parents=parents,
        help=summary,
        description=summary,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _part() -> _Parser:
    """Options shared by several subcommands; unset ones stay unset (options may come before or
    after the subcommand, and the subcommand's parser must not overwrite them with defaults)."""
    return _Parser(add_help=False, argument_default=argparse.SUPPRESS)


def _server_options(server: _Parser) -> None:
    server.add_argument("--url", help="server URL (default: PGTEMPLATE_URL, then pytest's config)")
    server.add_argument(
        "--project", metavar="NAME", help="only this project's databases (gc: see below)"
    )
    server.add_argument("--run", metavar="ID", help="only the databases of this run id")
    server.add_argument(
        "--all-projects", action="store_true", help="gc: every project's, not only this directory's"
    )
    server.add_argument(
        "--own", action="store_true", help="the own server of a live run, instead of --url"
    )
    server.add_argument("--owner", metavar="PID", type=int, help="--own: that run's server")
