"""Servers: finding, starting and reaping the plugin's own; talking to any server."""
