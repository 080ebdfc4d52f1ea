"""Errors of the core ingest service.

::

    CoreError                 catch-all for the core's own failures
    ├── ConfigError           bad configuration; names the key
    ├── StorageUnavailable    the database cannot be reached or failed; retried by the agent
    ├── SchemaError           the database schema is missing, too new or its storage unusable
    ├── EnrollmentError       an agent key cannot be enrolled, revoked or found
    └── CertificateError      a TLS certificate cannot be issued (no authority, files exist)
"""

from __future__ import annotations


class CoreError(Exception):
    """Base class: ``except CoreError`` catches every error the core raises on purpose."""


class ConfigError(CoreError):
    """The configuration is invalid; ``key`` is the dotted TOML key at fault."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


class StorageUnavailable(CoreError):  # noqa: N818 - named for the condition, like trio's errors
    """The database is down or failing; the cause is in ``__cause__``."""


class SchemaError(CoreError):
    """The schema is missing, newer than this release, or asks for storage the server lacks."""


class EnrollmentError(CoreError):
    """An agent key cannot be enrolled, revoked or found."""


class CertificateError(CoreError):
    """A certificate cannot be issued: no authority yet, an unfit name, or files in the way."""
