"""What the figures were measured on: machine, server, package versions, load."""

from __future__ import annotations

import asyncio
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import asyncpg

PACKAGES = (
    "pytest-pgtemplate",
    "pytest",
    "pytest-xdist",
    "pytest-asyncio",
    "pytest-postgresql",
    "SQLAlchemy",
    "alembic",
    "asyncpg",
)
_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers")


def describe(admin_url: str) -> dict[str, object]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_mem_kib() / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "server": asyncio.run(_server(admin_url)),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


async def _server(admin_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        info = {"version": str(await conn.fetchval("SHOW server_version"))}
        for name in _SETTINGS:
            info[name] = str(await conn.fetchval(f"SHOW {name}"))
        return info
    finally:
        await conn.close()
