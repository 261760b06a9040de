"""pytest-pgtemplate: a template-cloned PostgreSQL database for every pytest-xdist worker."""

from ._errors import (
    ConfigurationError,
    InsufficientPrivilegeError,
    LockTimeoutError,
    MigrationError,
    PgTemplateError,
    PgTemplateWarning,
    ResetError,
    ServerUnavailableError,
)
from ._server import ServerInfo
from ._template import TemplateInfo
from ._version import __version__
from ._worker import WorkerDatabase

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .fixtures import async_worker_database


def __getattr__(name: str) -> object:
    """``async_worker_database`` is pytest-facing: imported on use, so the CLI needs no pytest."""
    if name == "async_worker_database":
        from .fixtures import async_worker_database

        return async_worker_database
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConfigurationError",
    "InsufficientPrivilegeError",
    "LockTimeoutError",
    "MigrationError",
    "PgTemplateError",
    "PgTemplateWarning",
    "ResetError",
    "ServerInfo",
    "ServerUnavailableError",
    "TemplateInfo",
    "WorkerDatabase",
    "__version__",
    "async_worker_database",
]
