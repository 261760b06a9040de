"""Who this process is in the run, known before any ``conftest.py`` is imported.

pytest imports the initial conftest files before ``pytest_configure``, and xdist hands a worker
its ``workerinput`` later still; yet a conftest that builds an engine at import time reads the
variables of ``pgtemplate_export_env`` then. So the owner of the run (the xdist controller, or
the only process) decides the run id, starts its server if needed, and publishes both in an
environment variable that the workers it spawns inherit. A worker trusts it only if the process
that published it is its parent: a run nested inside another run's worker inherits the outer
variables too, and must not take the outer worker's database for its own.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from .naming import new_run_id

OWNER_ENV = "PYTEST_PGTEMPLATE_OWNER"
_WORKER_ENV = "PYTEST_XDIST_WORKER"


@dataclass(frozen=True)
class RunIdentity:
    run_id: str
    """Shared by all workers of one run (unique across runs, machines and CI shards)."""
    worker_id: str
    """``gw0``, ``gw1``... under xdist, ``main`` without it."""
    owner_pid: int
    """The process that lives for the whole run: owns the plugin's own server, if any."""
    server_url: str | None = None
    """The plugin's own server, when the owner started it before the workers."""


def owner_identity(*, controller: bool, given_uid: str | None) -> tuple[RunIdentity, str | None]:
    """The run's identity as its owner sees it, and the ``testrunuid`` xdist must use (if any).

    Under xdist the run id is xdist's ``testrun_uid`` (so logs and databases correlate): the
    owner picks the uid now and hands it to xdist, which would otherwise pick it only when it
    spawns the workers. A uid the user gives is often shared by every CI shard on purpose, so
    the run id is then a fresh one.
    """
    uid = uuid.uuid4().hex if controller and given_uid is None else None
    return RunIdentity(uid[:12] if uid else new_run_id(), "main", os.getpid()), uid


def worker_identity(environ: Mapping[str, str]) -> RunIdentity | None:
    """An xdist worker's identity from what its controller published; None if unprovable."""
    worker = environ.get(_WORKER_ENV)
    try:
        owner: dict[str, Any] = json.loads(environ.get(OWNER_ENV, ""))
    except ValueError:
        return None
    if not worker or not isinstance(owner, dict) or owner.get("pid") != os.getppid():
        return None
    return RunIdentity(owner["run_id"], worker, owner["pid"], owner.get("server_url"))


def is_worker(environ: Mapping[str, str]) -> bool:
    """Set by xdist in every worker, and inherited by anything a worker runs (a nested run)."""
    return bool(environ.get(_WORKER_ENV))


def publish(identity: RunIdentity, environ: MutableMapping[str, str]) -> None:
    """For the workers this process spawns; they check that it came from their parent."""
    fields = {"pid": os.getpid(), "run_id": identity.run_id, "server_url": identity.server_url}
    environ[OWNER_ENV] = json.dumps(fields)


def from_workerinput(workerinput: Mapping[str, Any]) -> RunIdentity:
    """What the controller told this worker (authoritative, but known only at configure time)."""
    return RunIdentity(
        run_id=workerinput["pgtemplate_run_id"],
        worker_id=workerinput.get("workerid", "main"),
        owner_pid=workerinput["pgtemplate_owner_pid"],
        server_url=workerinput.get("pgtemplate_server_url"),
    )
