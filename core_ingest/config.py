"""The core's TOML configuration, merged with environment and flags, validated once.

Layers, later wins: the file (``--config``), then ``CORE_INGEST_DSN`` / ``CORE_INGEST_LISTEN``,
then command-line flags. Every error names the key at fault. Relative file paths are taken from
the configuration file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from core_ingest.errors import ConfigError
from core_ingest.lineage.config import LineageConfig, parse_lineage_config
from core_ingest.quality_watch import AlertRule
from core_ingest.schema import STORAGE_CHOICES

DEFAULT_LISTEN = "127.0.0.1:50051"
# Connections shared by every agent's stream: a few per database core is plenty.
DEFAULT_POOL_SIZE = 8
# Batches of one stream verified and written at once; the agent keeps 8 in flight.
DEFAULT_BATCHES_PER_STREAM = 4
TLS_FILES = ("cert", "key", "client_ca")
# Every key of [database] and [server], and every table; the other tables check their own.
KNOWN_KEYS = {
    "database": ("dsn", "storage", "pool_size"),
    "server": ("listen", "batches_per_stream", "tls"),
    "openlineage": None,
    "quality": None,
    "metrics": None,
}


@dataclass(frozen=True, slots=True)
class ServerTlsFiles:
    """``[server.tls]``: the core's certificate and key, and the agents' authority."""

    cert: Path
    key: Path
    client_ca: Path


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """The validated configuration of one core ingest process."""

    dsn: str
    listen: str
    storage: str
    pool_size: int
    batches_per_stream: int
    tls: ServerTlsFiles | None = None  # None: plaintext, for loopback or inside a VPN only
    openlineage: LineageConfig | None = None  # None: no OpenLineage events
    quality: AlertRule = dataclasses.field(default_factory=AlertRule)
    metrics_listen: str | None = None  # host:port of the Prometheus endpoint; None: off


def _read(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("file", f"{path} is not UTF-8 text: byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("file", f"{path} is not valid TOML: {exc}") from None


def _string(
    data: dict[str, Any], table: str, key: str, override: str | None, default: str | None
) -> str:
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise ConfigError(table, "must be a table")
    value = override if override is not None else section.get(key, default)
    if value is None:
        raise ConfigError(f"{table}.{key}", "is required (or pass the matching flag)")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{table}.{key}", f"must be a non-empty string, got {value!r}")
    return value


def _integer(data: dict[str, Any], table: str, key: str, default: int, high: int) -> int:
    value = data.get(table, {}).get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ConfigError(f"{table}.{key}", f"must be an integer from 1 to {high}, got {value!r}")
    return value


QUALITY_LIMITS = {  # [quality] key -> (AlertRule field, accepted types, lowest, highest)
    "alert_threshold": ("threshold", int | float, 0.0, 1.0),
    "alert_window_seconds": ("window_seconds", int | float, 1.0, 86_400.0),
    "alert_check_seconds": ("check_seconds", int | float, 0.1, 3_600.0),
    "alert_min_readings": ("min_readings", int, 1, 10**9),
}


def _alert_rule(data: dict[str, Any]) -> AlertRule:
    """``[quality]``: the suspect-share alert (see core_ingest.quality_watch)."""
    section = data.get("quality", {})
    if not isinstance(section, dict):
        raise ConfigError("quality", "must be a table")
    settings = {}
    for key, value in section.items():
        if key not in QUALITY_LIMITS:
            raise ConfigError(f"quality.{key}", "is not a known setting")
        field, kind, low, high = QUALITY_LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            what = "an integer" if kind is int else "a number"
            raise ConfigError(
                f"quality.{key}", f"must be {what} from {low:g} to {high:g}, got {value!r}"
            )
        settings[field] = value
    return AlertRule(**settings)


def load_config(
    path: Path | None,
    *,
    dsn: str | None = None,
    listen: str | None = None,
    storage: str | None = None,
) -> CoreConfig:
    """Merge the file with overrides (None means "not given") and validate."""
    data = _read(path)
    _refuse_unknown(data)
    config = CoreConfig(
        dsn=_string(data, "database", "dsn", dsn, None),
        listen=_string(data, "server", "listen", listen, DEFAULT_LISTEN),
        storage=_string(data, "database", "storage", storage, "auto"),
        pool_size=_integer(data, "database", "pool_size", DEFAULT_POOL_SIZE, 1_000),
        batches_per_stream=_integer(
            data, "server", "batches_per_stream", DEFAULT_BATCHES_PER_STREAM, 64
        ),
        tls=_tls(data.get("server", {}), base=path.parent if path else Path()),
        openlineage=parse_lineage_config(
            data.get("openlineage"), base=path.parent if path else None
        ),
        quality=_alert_rule(data),
        metrics_listen=_metrics_listen(data),
    )
    if config.storage not in STORAGE_CHOICES:
        raise ConfigError("database.storage", f"must be one of {STORAGE_CHOICES}")
    _check_address("server.listen", config.listen)
    if config.metrics_listen is not None:
        _check_address("metrics.listen", config.metrics_listen)
    return config


def _refuse_unknown(data: dict[str, Any]) -> None:
    """A misspelt table or key is an error naming it, not a silent default."""
    for table in sorted(data):
        if table not in KNOWN_KEYS:
            _unknown(table, table, KNOWN_KEYS)
        known = KNOWN_KEYS[table]
        if known is not None and isinstance(data[table], dict):
            for key in sorted(set(data[table]) - set(known)):
                _unknown(f"{table}.{key}", key, known)


def _unknown(dotted: str, name: str, known: Iterable[str]) -> NoReturn:
    close = difflib.get_close_matches(name, list(known), n=1)
    raise ConfigError(
        dotted, "is not a known setting" + (f"; did you mean {close[0]!r}?" if close else "")
    )


def _metrics_listen(data: dict[str, Any]) -> str | None:
    """``[metrics] listen``: where the Prometheus endpoint listens (IPv4 or a host name)."""
    section = data.get("metrics", {})
    if not isinstance(section, dict):
        raise ConfigError("metrics", "must be a table")
    unknown = set(section) - {"listen"}
    if unknown:
        raise ConfigError(f"metrics.{min(unknown)}", "is not a known setting")
    listen = section.get("listen")
    if isinstance(listen, str) and listen.startswith("["):
        raise ConfigError("metrics.listen", f"must be an IPv4 address or host name, got {listen!r}")
    return listen


def _check_address(key: str, value: object) -> None:
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65_536:  # noqa: PLR2004
        raise ConfigError(key, f"must be host:port, got {value!r}")


def _tls(server: dict[str, Any], *, base: Path) -> ServerTlsFiles | None:
    """``[server.tls]``: all three files or none (a half-configured TLS must not start)."""
    if "tls" not in server:
        return None
    table = server["tls"]
    if not isinstance(table, dict):
        raise ConfigError("server.tls", "must be a table")
    unknown = set(table) - set(TLS_FILES)
    if unknown:
        raise ConfigError(f"server.tls.{min(unknown)}", f"is not a setting; use {TLS_FILES}")
    paths = {}
    for name in TLS_FILES:
        value = table.get(name)
        if value is None:
            raise ConfigError(f"server.tls.{name}", "is required: set cert, key and client_ca")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"server.tls.{name}", f"must be a file path, got {value!r}")
        paths[name] = base / value
    return ServerTlsFiles(**paths)
