"""pytest-pgtemplate: a template-cloned PostgreSQL database for every pytest-xdist worker."""

from ._version import __version__
from .errors import (
    ConfigurationError,
    InsufficientPrivilegeError,
    LockTimeoutError,
    MigrationError,
    PgTemplateError,
    PgTemplateWarning,
    ResetError,
    ServerUnavailableError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .fixtures import async_worker_database
    from .server.admin import ServerInfo
    from .server.connection import Server
    from .template import TemplateInfo
    from .worker import WorkerDatabase

_LAZY = {
    "Server": "server.connection",
    "ServerInfo": "server.admin",
    "TemplateInfo": "template",
    "WorkerDatabase": "worker",
    "async_worker_database": "fixtures",
}


def __getattr__(name: str) -> object:
    """Imported on first use: the ``pgtemplate`` command needs neither pytest nor SQLAlchemy's
    engine machinery, and importing them costs it a second."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ConfigurationError",
    "InsufficientPrivilegeError",
    "LockTimeoutError",
    "MigrationError",
    "PgTemplateError",
    "PgTemplateWarning",
    "ResetError",
    "Server",
    "ServerInfo",
    "ServerUnavailableError",
    "TemplateInfo",
    "WorkerDatabase",
    "__version__",
    "async_worker_database",
]
