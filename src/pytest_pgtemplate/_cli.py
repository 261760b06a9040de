"""``pgtemplate list`` and ``pgtemplate gc``: see and clean the plugin's databases on a server.

Reads the server URL the way the plugin does (``--url`` > ``PGTEMPLATE_URL`` > the pytest ini
file's ``pgtemplate_url``), and never touches a database without the plugin's marker.
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import json
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ._errors import PgTemplateError
from ._liveness import Entry, dead_workers, drop_entries, inventory
from ._server import connect
from ._urls import parse_server_url


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        url = _server_url(args.url)
        return asyncio.run(_run(args, url))
    except PgTemplateError as exc:
        print(f"pgtemplate: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgtemplate", description=__doc__)
    parser.add_argument("--url", help="server URL (default: PGTEMPLATE_URL, then pytest's ini)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="templates, worker and kept databases")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    gc = commands.add_parser("gc", help="drop the databases of runs that are gone")
    gc.add_argument("--dry-run", action="store_true", help="only show what would be dropped")
    gc.add_argument("--kept", action="store_true", help="also drop --pgtemplate-keep-failed copies")
    gc.add_argument(
        "--templates", action="store_true", help="also drop templates that no live run clones"
    )
    gc.add_argument("--project", help="with --templates: only this project's (its rootdir's name)")
    gc.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


async def _run(args: argparse.Namespace, url: str) -> int:
    admin = await connect(parse_server_url(url), timeout=10)
    try:
        entries = await inventory(admin, sizes=args.command == "list")
        if args.command == "list":
            _show(entries, args.json)
            return 0
        doomed = dead_workers(entries) + [
            e
            for e in entries
            if (args.kept and e.kind == "kept")
            or (args.templates and e.kind == "template" and not e.alive and _in(args.project, e))
        ]
        if not args.dry_run:
            await drop_entries(admin, doomed)
        _show(doomed, args.json, title="would drop" if args.dry_run else "dropped")
        return 0
    finally:
        await admin.close()


def _in(project: str | None, entry: Entry) -> bool:
    return project is None or entry.marker.project == project


def _show(entries: list[Entry], as_json: bool, title: str = "") -> None:
    rows = [_row(entry) for entry in entries]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if title:
        print(f"{title}: {len(rows)} database(s)")
    columns = ["name", "kind", "run", "template", "alive", "size_mb", "age"]
    widths = {c: max([len(c), *(len(str(row[c])) for row in rows)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


def _row(entry: Entry) -> dict[str, object]:
    marker = entry.marker
    return {
        "name": entry.name,
        "kind": entry.kind,
        "run": marker.run_id or "-",
        "template": marker.template or "-",
        "alive": "yes" if entry.alive else "no",
        "size_mb": round(entry.size / 2**20, 1),
        "age": _age(marker.created),
        "created": marker.created or None,
        "project": marker.project or None,
    }


def _age(created: str) -> str:
    if not created:
        return "-"
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(created)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _server_url(given: str | None) -> str:
    url = given or os.environ.get("PGTEMPLATE_URL") or _ini_url(Path.cwd())
    if not url:
        raise PgTemplateError(
            "no server: pass --url, set PGTEMPLATE_URL, or run where pytest's ini file sets "
            "pgtemplate_url (the plugin's own throwaway server exists only during a run, and "
            "the next run sweeps what a dead one left)"
        )
    return url


def _ini_url(start: Path) -> str | None:
    """``pgtemplate_url`` from the nearest pytest config file, as pytest would find it."""
    for directory in [start, *start.parents]:
        for name, read in _INI_READERS:
            path = directory / name
            if path.is_file():
                value = read(path)
                if value is not None:
                    return value or None
    return None


def _from_toml(path: Path) -> str | None:
    tool = tomllib.loads(path.read_text()).get("tool", {}).get("pytest", {})
    options = tool.get("ini_options", tool)
    return None if not tool else str(options.get("pgtemplate_url", ""))


def _from_cfg(section: str) -> Callable[[Path], str | None]:
    def read(path: Path) -> str | None:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(path)
        return (
            parser.get(section, "pgtemplate_url", fallback="")
            if parser.has_section(section)
            else None
        )

    return read


_INI_READERS = (
    ("pytest.ini", _from_cfg("pytest")),
    ("pyproject.toml", _from_toml),
    ("tox.ini", _from_cfg("pytest")),
    ("setup.cfg", _from_cfg("tool:pytest")),
)
