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
from ._provision import WorkerDatabase
from ._server import ServerInfo
from ._template import TemplateInfo
from ._version import __version__

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
]
