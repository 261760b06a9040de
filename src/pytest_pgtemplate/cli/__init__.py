"""The ``pgtemplate`` command: list and clean the plugin's databases on a server."""

from .commands import main

__all__ = ["main"]
