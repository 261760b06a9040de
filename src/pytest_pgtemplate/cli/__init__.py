"""The ``pgtemplate`` command: list and clean the plugin's databases on a server, and its own
servers' cache.

``main`` imports the command on call: the plugin reads pytest's config file with ``cli.config``,
and must not load the driver (``commands`` imports asyncpg and SQLAlchemy) to do so.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from .commands import main as run

    return run(argv)


__all__ = ["main"]
