"""Errors a user can act on: each message says what went wrong and what to change.

They carry only a message, so they pickle cleanly across xdist's process boundary.
"""

from __future__ import annotations


class PgTemplateError(Exception):
    """Base class: a problem with the user's setup, explained in the message."""


class ConfigurationError(PgTemplateError):
    """A setting has a value the plugin cannot use."""


class ServerUnavailableError(PgTemplateError):
    """The PostgreSQL server cannot be reached or refused the connection."""


class InsufficientPrivilegeError(PgTemplateError):
    """The configured role may not do what the plugin needs (create databases)."""


class MigrationError(PgTemplateError):
    """Building the template failed; the half-built template has been dropped."""


class LockTimeoutError(PgTemplateError):
    """The template build lock was not free within ``pgtemplate_lock_timeout``."""


class ResetError(PgTemplateError):
    """A worker database could not be put back to the template's state."""


class PgTemplateWarning(UserWarning):
    """Something was repaired on the user's behalf (e.g. a leaked transaction was ended)."""
