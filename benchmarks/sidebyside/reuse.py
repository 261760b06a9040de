"""Template reuse with the plugin's own server: run twice on one fresh cache directory.

The first run pays initdb and the template build; the second must start the server warm,
migrate nothing, and be ready (server + template + clones) in under half a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cleanup import remove_server_cache
from .config import PLUGIN_EMBEDDED, Case, Workload
from .runner import Context, RunResult, run_case

SETUP_BUDGET_S = 0.5


@dataclass
class ReuseCheck:
    first: RunResult
    second: RunResult
    leftover_servers: list[int]

    @property
    def migrated_again(self) -> bool:
        summary = self.second.summary
        return summary is None or summary.built

    @property
    def setup_seconds(self) -> float | None:
        """Server start + template lookup (slowest worker) + one clone, from the second run."""
        summary = self.second.summary
        template = self.second.timings.fixture_ms("pg_template", "max")
        if summary is None or summary.start_seconds is None or template is None:
            return None
        return summary.start_seconds + template / 1000 + summary.clone_ms / 1000

    @property
    def met(self) -> bool:
        seconds = self.setup_seconds
        return not self.migrated_again and seconds is not None and seconds < SETUP_BUDGET_S


def check_reuse(ctx: Context, workload: Workload) -> ReuseCheck:
    cache = ctx.server_cache("reuse")
    case = Case(workload, PLUGIN_EMBEDDED, "2", 1)
    try:
        first = run_case(case, ctx, 101, cache)
        second = run_case(case, ctx, 102, cache)
    finally:
        leftover = remove_server_cache(cache)
    return ReuseCheck(first, second, leftover)
