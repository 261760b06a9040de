"""Where the plugin keeps its per-run and per-test state in pytest's stashes.

One module of keys, imported by the hooks (``plugin.py``) and the fixtures alike, so neither
imports the other.
"""

from __future__ import annotations

import pytest

from .provision import Provisioner
from .report import Report
from .worker import WorkerDatabase

PROVISIONER = pytest.StashKey[Provisioner]()
"""config: settings, identity, the run report and the steps the fixtures call."""
TESTRUN_UID = pytest.StashKey[str | None]()
"""config (the run's owner): the ``testrunuid`` it chose for xdist, which the run id comes from."""
WORKER_REPORTS = pytest.StashKey[list[Report]]()
"""config (xdist controller): what each worker did, as it finished."""
CRASHED = pytest.StashKey[bool]()
"""config (xdist controller): a worker crashed, so the controller sweeps at the end."""
USED_DATABASE = pytest.StashKey[WorkerDatabase]()
"""item: the test used the worker database (for ``--pgtemplate-keep-failed``)."""
