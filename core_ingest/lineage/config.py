"""The ``[openlineage]`` table: where the core sends its lineage events, if anywhere."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from core_ingest.errors import ConfigError
from core_ingest.lineage.events import DEFAULT_NAMESPACE
from proto.lineage_names import DEFAULT_DATABASE_NAMESPACE
from proto.settings import FilePath, Settings, invalid, validate

DEFAULT_ENDPOINT = "api/v1/lineage"  # the OpenLineage HTTP API's path, as Marquez serves it
DEFAULT_TIMEOUT_SECONDS = 5.0  # per HTTP attempt; the library's default
# About half a minute of a busy core's batches while the consumer is slow; a few MB at most.
DEFAULT_MAX_QUEUED_EVENTS = 10_000
MAX_QUEUED_EVENTS_LIMIT = 1_000_000

# Each transport's own keys, with their defaults (None: required by that transport).
_TRANSPORT_KEYS: dict[str, dict[str, object]] = {
    "file": {"path": None},
    "http": {"url": None, "endpoint": DEFAULT_ENDPOINT, "timeout_seconds": DEFAULT_TIMEOUT_SECONDS},
}


class LineageConfig(Settings, frozen=True):
    """Optional: an OpenLineage event per committed batch (docs/lineage.md)."""

    transport: Annotated[
        Literal["http", "file"],
        Meta(
            description="Where events go: an HTTP consumer (Marquez) or a JSON-lines file",
            examples=["http"],
        ),
    ]
    url: (
        Annotated[
            str,
            Meta(
                description="http: required; the consumer's http:// or https:// URL",
                examples=["http://marquez.example.net:5000"],
            ),
        ]
        | None
    ) = None
    endpoint: (
        Annotated[
            str,
            Meta(
                description=f"http: joined to url (default {DEFAULT_ENDPOINT})",
                examples=[DEFAULT_ENDPOINT],
            ),
        ]
        | None
    ) = None
    timeout_seconds: (
        Annotated[
            float,
            Meta(
                ge=0.1,
                le=60,
                description=f"http: per attempt (default {DEFAULT_TIMEOUT_SECONDS:g})",
                examples=[DEFAULT_TIMEOUT_SECONDS],
            ),
        ]
        | None
    ) = None
    path: (
        Annotated[
            FilePath,
            Meta(description="file: required; JSON lines appended; relative to the file's folder"),
        ]
        | None
    ) = None
    namespace: Annotated[str, Meta(min_length=1, description="The jobs' namespace")] = (
        DEFAULT_NAMESPACE
    )
    database_namespace: Annotated[
        str,
        Meta(
            min_length=1, description="The tables' namespace, e.g. postgres://db.example.net:5432"
        ),
    ] = DEFAULT_DATABASE_NAMESPACE
    max_queued_events: Annotated[
        int,
        Meta(
            ge=1,
            le=MAX_QUEUED_EVENTS_LIMIT,
            description="Events waiting to be sent; past it they are dropped",
        ),
    ] = DEFAULT_MAX_QUEUED_EVENTS

    def __post_init__(self) -> None:
        """Each transport's keys: required or defaulted there, refused under the other."""
        own = _TRANSPORT_KEYS[self.transport]
        for other in _TRANSPORT_KEYS.values():
            for key in other.keys() - own.keys():
                if getattr(self, key) is not None:
                    raise invalid(key, f'is not a key of the "{self.transport}" transport')
        for key, default in own.items():
            if getattr(self, key) is None:
                if default is None:
                    raise invalid(key, f'is required by the "{self.transport}" transport')
                msgspec.structs.force_setattr(self, key, default)
        self._check_destination()

    def _check_destination(self) -> None:
        """An http(s) URL, or a file whose folder exists: nothing creates it."""
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise invalid("url", f"must be an http:// or https:// URL, got {self.url!r}")
        if self.path is not None:
            if self.path.is_dir():
                raise invalid("path", f"{self.path} is a folder; name a file in it")
            if not self.path.parent.is_dir():
                raise invalid("path", f"folder {self.path.parent} does not exist")


class _LineageTable(Settings, frozen=True):
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
