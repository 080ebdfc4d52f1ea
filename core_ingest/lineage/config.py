"""The ``[openlineage]`` table: where the core sends its lineage events, if anywhere."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from core_ingest.errors import ConfigError
from core_ingest.lineage.events import DEFAULT_DATABASE_NAMESPACE, DEFAULT_NAMESPACE
from proto.settings import FilePath, Settings, validate

DEFAULT_ENDPOINT = "api/v1/lineage"  # the OpenLineage HTTP API's path, as Marquez serves it
DEFAULT_TIMEOUT_SECONDS = 5.0  # per HTTP attempt; the library's default
# About half a minute of a busy core's batches while the consumer is slow; a few MB at most.
DEFAULT_MAX_QUEUED_EVENTS = 10_000
MAX_QUEUED_EVENTS_LIMIT = 1_000_000

_COMMON_KEYS = ("transport", "namespace", "database_namespace", "max_queued_events")
_TRANSPORT_KEYS = {"file": ("path",), "http": ("url", "endpoint", "timeout_seconds")}


def _transport_key(value: Any, info: ValidationInfo, default: Any = None) -> Any:  # noqa: ANN401
    """A key of one transport: required (when no default) there, refused under the other."""
    transport = info.data.get("transport")
    if transport is None:  # the transport itself was refused: that error is reported
        return value
    name = str(info.field_name)
    if name not in _TRANSPORT_KEYS[transport]:
        if value is not None:
            raise ValueError(f'is not a key of the "{transport}" transport')
        return None
    if value is None and default is None:
        raise ValueError(f'is required by the "{transport}" transport')
    return default if value is None else value


class LineageConfig(Settings):
    """Optional: an OpenLineage event per committed batch (docs/lineage.md)."""

    transport: Literal["http", "file"] = Field(
        description="Where events go: an HTTP consumer (Marquez) or a JSON-lines file",
        examples=["http"],
    )
    url: str | None = Field(
        None,
        description="http: required; the consumer's http:// or https:// URL",
        examples=["http://marquez.example.net:5000"],
    )
    endpoint: str | None = Field(
        None,
        description=f"http: joined to url (default {DEFAULT_ENDPOINT})",
        examples=[DEFAULT_ENDPOINT],
    )
    timeout_seconds: float | None = Field(
        None,
        ge=0.1,
        le=60,
        description=f"http: per attempt (default {DEFAULT_TIMEOUT_SECONDS:g})",
        examples=[DEFAULT_TIMEOUT_SECONDS],
    )
    path: FilePath | None = Field(
        None,
        description="file: required; JSON lines appended; relative to the file's folder",
    )
    namespace: str = Field(DEFAULT_NAMESPACE, min_length=1, description="The jobs' namespace")
    database_namespace: str = Field(
        DEFAULT_DATABASE_NAMESPACE,
        min_length=1,
        description="The tables' namespace, e.g. postgres://db.example.net:5432",
    )
    max_queued_events: int = Field(
        DEFAULT_MAX_QUEUED_EVENTS,
        ge=1,
        le=MAX_QUEUED_EVENTS_LIMIT,
        description="Events waiting to be sent; past it they are dropped",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        url = _transport_key(url, info)
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
        return url

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str | None, info: ValidationInfo) -> str | None:
        return _transport_key(endpoint, info, DEFAULT_ENDPOINT)

    @field_validator("timeout_seconds")
    @classmethod
    def _timeout(cls, seconds: float | None, info: ValidationInfo) -> float | None:
        return _transport_key(seconds, info, DEFAULT_TIMEOUT_SECONDS)

    @field_validator("path")
    @classmethod
    def _file_path(cls, path: FilePath | None, info: ValidationInfo) -> FilePath | None:
        """The file events are appended to; its folder must exist (nothing creates it)."""
        path = _transport_key(path, info)
        if path is not None:
            if path.is_dir():
                raise ValueError(f"{path} is a folder; name a file in it")
            if not path.parent.is_dir():
                raise ValueError(f"folder {path.parent} does not exist")
        return path


class _LineageTable(Settings):
    openlineage: LineageConfig | None = None


def parse_lineage_config(
    section: dict[str, Any] | None,
    *,
    base: Any = None,  # noqa: ANN401 - a Path or None
) -> LineageConfig | None:
    """The ``[openlineage]`` table alone; None (no table) means lineage events are off.

    Raises:
        ConfigError: naming the dotted key at fault, e.g. ``openlineage.url``.

    """
    if section is None:
        return None
    return validate(
        _LineageTable, {"openlineage": section}, error=ConfigError, base=base
    ).openlineage
