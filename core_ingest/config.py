"""The core's TOML configuration, one typed model per table, merged with environment and flags.

Layers, later wins: the file (``--config``), then ``CORE_INGEST_DSN`` / ``CORE_INGEST_LISTEN``,
then command-line flags. Every error names the dotted key at fault, and an unknown key is
refused with a did-you-mean (``proto.settings``). Relative file paths are taken from the
configuration file's folder. The README's configuration reference is generated from these
models (``scripts/config_reference.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from core_ingest.errors import ConfigError
from core_ingest.lineage.config import LineageConfig
from core_ingest.quality_watch import AlertRule
from proto.settings import Address, FilePath, MetricsSection, Settings, read_toml, validate

DEFAULT_LISTEN = "127.0.0.1:50051"
REFERENCE_RULE = AlertRule()  # the reference case's rule: 0.5 % of the last hour


class DatabaseSection(Settings):
    """The central database."""

    dsn: str = Field(
        min_length=1,
        description="Or --dsn, or CORE_INGEST_DSN",
        examples=["postgresql://ingest@db.example.net/meters"],
    )
    storage: Literal["auto", "timescaledb", "native-partitioning"] = Field(
        "auto", description="For a new schema: auto takes TimescaleDB when preloaded"
    )
    # Connections shared by every agent's stream: a few per database core is plenty.
    pool_size: int = Field(8, ge=1, le=1_000, description="Connections shared by all streams")


class ServerTlsFiles(Settings):
    """Optional: mutual TLS only; cert, key and client_ca all, or no table."""

    cert: FilePath = Field(
        description="From `core-ingest ca issue-server`",
        examples=["tls/server-core.example.net.crt"],
    )
    key: FilePath = Field(
        description="Its private key", examples=["tls/server-core.example.net.key"]
    )
    client_ca: FilePath = Field(
        description="Agents' certificates must come from this authority",
        examples=["tls/ca.crt"],
    )


class ServerSection(Settings):
    """The gRPC server agents stream to."""

    listen: Address = Field(DEFAULT_LISTEN, description="host:port")
    # Batches of one stream verified and written at once; the agent keeps 8 in flight.
    batches_per_stream: int = Field(
        4, ge=1, le=64, description="Batches of one agent verified and written at once"
    )
    tls: ServerTlsFiles | None = None  # None: plaintext, for loopback or inside a VPN only


class QualitySection(Settings):
    """The suspect-share alert (the reference case's rule); all optional."""

    alert_threshold: float = Field(
        REFERENCE_RULE.threshold,
        ge=0,
        le=1,
        description="Alert when more than this share of readings is flagged suspect",
    )
    alert_window_seconds: float = Field(
        REFERENCE_RULE.window_seconds, ge=1, le=86_400, description="... among those received"
    )
    alert_check_seconds: float = Field(
        REFERENCE_RULE.check_seconds, ge=0.1, le=3_600, description="How often each core checks"
    )
    alert_min_readings: int = Field(
        REFERENCE_RULE.min_readings,
        ge=1,
        le=10**9,
        description="Fewer readings in the window raise nothing",
    )

    @property
    def rule(self) -> AlertRule:
        """The rule the quality watch applies."""
        return AlertRule(
            threshold=self.alert_threshold,
            window_seconds=self.alert_window_seconds,
            check_seconds=self.alert_check_seconds,
            min_readings=self.alert_min_readings,
        )


class CoreConfig(Settings):
    """The whole configuration of one core ingest process (``core.toml``)."""

    database: DatabaseSection = Field({})  # type: ignore[assignment]  # validated: names dsn
    server: ServerSection = ServerSection()
    openlineage: LineageConfig | None = None
    quality: QualitySection = QualitySection()
    metrics: MetricsSection = MetricsSection()


def load_config(
    path: Path | None,
    *,
    dsn: str | None = None,
    listen: str | None = None,
    storage: str | None = None,
) -> CoreConfig:
    """Merge the file with overrides (None means "not given") and validate.

    Raises:
        ConfigError: naming the dotted key at fault (or ``file`` when the file itself is bad).

    """
    data: dict[str, Any] = read_toml(path, ConfigError) if path else {}
    overrides = (("database", "dsn", dsn), ("server", "listen", listen))
    for table, key, value in (*overrides, ("database", "storage", storage)):
        if value is not None and isinstance(data.setdefault(table, {}), dict):
            data[table][key] = value
    return validate(CoreConfig, data, error=ConfigError, base=path.parent if path else None)
