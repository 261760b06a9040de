"""Where the plugin keeps its per-run and per-test state in pytest's stashes.

One module of keys, imported by the hooks (``plugin.py``) and the fixtures alike, so neither
imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .report import Report
from .run import Run

if TYPE_CHECKING:
    from .activity import Activity
    from .worker import WorkerDatabase

RUN = pytest.StashKey[Run]()
"""config: this process's settings, identity, report and the servers it met."""
TESTRUN_UID = pytest.StashKey[str | None]()
"""config (the run's owner): the ``testrunuid`` it chose for xdist, which the run id comes from."""
WORKER_REPORTS = pytest.StashKey[list[Report]]()
"""config (xdist controller): what each worker did, as it finished."""
CRASHED = pytest.StashKey[bool]()
"""config (xdist controller): a worker crashed, so the controller sweeps at the end."""
USED_DATABASE: pytest.StashKey[WorkerDatabase] = pytest.StashKey()
"""item: the test used the worker database (for ``--pgtemplate-keep-failed``)."""
SEEN_ERRORS = pytest.StashKey[set[int]]()
"""config: session fixtures' setup errors already shown in full (by id)."""
ACTIVITY: pytest.StashKey[Activity] = pytest.StashKey()
"""config: what ran since the worker database's last reset (registered on first use)."""
