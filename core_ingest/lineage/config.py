"""The ``[openlineage]`` table: where the core sends its lineage events, if anywhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core_ingest.errors import ConfigError
from core_ingest.lineage.events import DEFAULT_DATABASE_NAMESPACE, DEFAULT_NAMESPACE

TRANSPORTS = ("file", "http")
DEFAULT_ENDPOINT = "api/v1/lineage"  # the OpenLineage HTTP API's path, as Marquez serves it
DEFAULT_TIMEOUT_SECONDS = 5.0  # per HTTP attempt; the library's default
# About half a minute of a busy core's batches while the consumer is slow; a few MB at most.
DEFAULT_MAX_QUEUED_EVENTS = 10_000
MAX_QUEUED_EVENTS_LIMIT = 1_000_000
# Two retries (the library's default is five): a consumer that is down would otherwise hold
# the one sending thread about 9 s per event in backoff; the queue absorbs short outages.
HTTP_RETRY = {"total": 2, "connect": 2, "read": 2}

_COMMON_KEYS = ("transport", "namespace", "database_namespace", "max_queued_events")
_TRANSPORT_KEYS = {"file": ("path",), "http": ("url", "endpoint", "timeout_seconds")}


@dataclass(frozen=True, slots=True)
class LineageConfig:
    """The validated ``[openlineage]`` table; ``path`` is set for "file", ``url`` for "http"."""

    transport: str
    namespace: str
    database_namespace: str
    max_queued_events: int
    path: Path | None = None
    url: str | None = None
    endpoint: str = DEFAULT_ENDPOINT
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


class _Table:
    """One TOML table whose errors name the dotted key."""

    def __init__(self, data: dict[str, Any], prefix: str) -> None:
        self.data = data
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def text(self, name: str, default: str | None) -> str:
        value = self.data.get(name, default)
        if value is None:
            raise ConfigError(self.key(name), "is required")
        if not isinstance(value, str) or not value:
            raise ConfigError(self.key(name), f"must be a non-empty string, got {value!r}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.key(name), f"must be a number, got {value!r}")
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be {low}..{high}, got {value!r}")
        return value

    def only(self, allowed: tuple[str, ...], why: str) -> None:
        """Refuse keys outside ``allowed``: a typo or another transport's key would be ignored."""
        for name in self.data:
            if name not in allowed:
                raise ConfigError(self.key(name), f"is not a key {why}")


def parse_lineage_config(
    section: dict[str, Any] | None, prefix: str = "openlineage", *, base: Path | None = None
) -> LineageConfig | None:
    """Validate the ``[openlineage]`` table; None (no table) means lineage events are off.

    Args:
        section: the table as parsed from TOML, or None when the file has none.
        prefix: the table's dotted key, for error messages.
        base: the folder a relative ``path`` is taken from (the configuration file's);
            the working directory when None.

    Raises:
        ConfigError: naming the dotted key at fault, e.g. ``openlineage.url``.

    """
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError(prefix, "must be a table")
    table = _Table(section, prefix)
    transport = table.text("transport", None)
    if transport not in TRANSPORTS:
        raise ConfigError(table.key("transport"), f"must be one of {TRANSPORTS}, got {transport!r}")
    table.only(_COMMON_KEYS + _TRANSPORT_KEYS[transport], f'of the "{transport}" transport')
    common: dict[str, Any] = {
        "transport": transport,
        "namespace": table.text("namespace", DEFAULT_NAMESPACE),
        "database_namespace": table.text("database_namespace", DEFAULT_DATABASE_NAMESPACE),
        "max_queued_events": _max_queued_events(table),
    }
    if transport == "file":
        return LineageConfig(**common, path=_file_path(table, base))
    return LineageConfig(
        **common,
        url=_http_url(table),
        endpoint=table.text("endpoint", DEFAULT_ENDPOINT),
        timeout_seconds=float(table.number("timeout_seconds", DEFAULT_TIMEOUT_SECONDS, 0.1, 60)),
    )


def _max_queued_events(table: _Table) -> int:
    value = table.number("max_queued_events", DEFAULT_MAX_QUEUED_EVENTS, 1, MAX_QUEUED_EVENTS_LIMIT)
    if not isinstance(value, int):
        raise ConfigError(table.key("max_queued_events"), f"must be an integer, got {value!r}")
    return value


def _file_path(table: _Table, base: Path | None) -> Path:
    """The JSON-lines file events are appended to; its folder must exist (nothing creates it)."""
    path = (base or Path.cwd()) / table.text("path", None)
    if path.is_dir():
        raise ConfigError(table.key("path"), f"{path} is a folder; name a file in it")
    if not path.parent.is_dir():
        raise ConfigError(table.key("path"), f"folder {path.parent} does not exist")
    return path


def _http_url(table: _Table) -> str:
    url = table.text("url", None)
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(table.key("url"), f"must be an http:// or https:// URL, got {url!r}")
    return url
