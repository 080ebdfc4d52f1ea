"""Errors of the edge agent.

::

    EdgeError                 catch-all for the agent's own failures
    ├── ConfigError           bad configuration; names the key (``key``) and the problem
    ├── KeyFileError          a key file missing, malformed or readable by others
    ├── BufferUnavailable     the buffer cannot be written (disk full, I/O error); retried
    │   └── BufferDamaged     SQLite finds the buffer file damaged; salvaged at start
    ├── SourceError           a device could not be read; ``device`` says which
    │   └── MalformedReply    the device answered, but not as the register map says
    └── UplinkError           talking to the core failed
        └── UplinkBroken      the network or the core failed; retried with backoff
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class: ``except EdgeError`` catches every error the agent raises on purpose."""


class ConfigError(EdgeError):
    """The configuration is invalid; ``key`` is the dotted TOML key at fault."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class KeyFileError(EdgeError):
    """A key file cannot be used; ``path`` says which."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


class BufferUnavailable(EdgeError):  # noqa: N818 - named for the condition
    """The buffer cannot be written now; nothing was half-written. Cause in ``__cause__``."""


class BufferDamaged(BufferUnavailable):
    """The buffer file is damaged (bits flipped on disk); ``edge-agent run`` salvages it."""


class SourceError(EdgeError):
    """Reading a device failed; ``device`` names it, ``kind`` says how (for diagnostics).

    Kinds: ``unreachable`` (no TCP connection), ``no_reply`` (connected, no answer in time: a
    black hole), ``exception`` (a Modbus exception reply), ``malformed`` (an answer the
    register map does not allow), ``failed`` (anything else).
    """

    kind = "failed"

    def __init__(self, device: str, problem: str, *, kind: str | None = None) -> None:
        super().__init__(f"{device}: {problem}")
        self.device = device
        if kind is not None:
            self.kind = kind


class MalformedReply(SourceError):  # noqa: N818 - named for what it is, like trio's names
    """The device answered with values the register map does not allow."""

    kind = "malformed"


class UplinkError(EdgeError):
    """Talking to the core failed."""


class UplinkBroken(UplinkError):  # noqa: N818
    """The network or the core failed; the cause is in ``__cause__``."""
