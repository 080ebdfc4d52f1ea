"""OpenLineage run events for committed batches: a best-effort copy for external catalogs.

The database's ``batches`` ledger is the authoritative lineage; this module copies each committed
batch to an OpenLineage consumer (a JSON-lines file or an HTTP endpoint such as Marquez) so data
catalogs can show it. docs/lineage.md describes the events and the ``[openlineage]`` table.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlsplit

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    JobFacet,
    RunFacet,
    data_quality_metrics_input_dataset,
    job_type_job,
    nominal_time_run,
    output_statistics_output_dataset,
    processing_engine_run,
)
from openlineage.client.transport import Transport
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import HttpConfig, HttpTransport

from core_ingest import __version__
from core_ingest.errors import ConfigError

log = logging.getLogger(__name__)

TRANSPORTS = ("file", "http")
DEFAULT_NAMESPACE = "meterpipe"
# Where the core's tables live, as OpenLineage names a PostgreSQL server (postgres://host:port).
# One database per region (DESIGN.md) means one namespace each: set it per deployment.
DEFAULT_DATABASE_NAMESPACE = "postgres://meterpipe"
DEFAULT_ENDPOINT = "api/v1/lineage"  # the OpenLineage HTTP API's path, as Marquez serves it
DEFAULT_TIMEOUT_SECONDS = 5.0  # per HTTP attempt; the library's default
# About half a minute of a busy core's batches while the consumer is slow; a few MB at most.
DEFAULT_MAX_QUEUED_EVENTS = 10_000
MAX_QUEUED_EVENTS_LIMIT = 1_000_000
# Two retries (the library's default is five): a consumer that is down would otherwise hold
# the one sending thread about 9 s per event in backoff; the queue absorbs short outages.
HTTP_RETRY = {"total": 2, "connect": 2, "read": 2}
SEND_THREAD_NAME = "core_ingest.lineage_events"

# meterpipe has no public home yet: ``.invalid`` (RFC 2606) marks these URIs as placeholders.
# TODO: the published location, once there is one. The facet schema's path is its path in
# this repository; a new version of the facet gets a new folder, never an edited file.
PROJECT_URL = "https://meterpipe.invalid"
PRODUCER = f"{PROJECT_URL}/tree/v{__version__}/core_ingest"
BATCH_FACET_SCHEMA_PATH = "docs/openlineage/facets/1-0-0/MeterpipeBatchRunFacet.json"
BATCH_FACET_SCHEMA_URL = f"{PROJECT_URL}/{BATCH_FACET_SCHEMA_PATH}#/$defs/MeterpipeBatchRunFacet"
# Fixed forever: run ids computed by any release (or by a query on the ledger) must agree.
RUN_ID_NAMESPACE = uuid.UUID("5d0f3c1e-8a4b-4f6e-9c2d-7b1a0e6f4c83")
JOB_NAME_PREFIX = "core_ingest.batch"
BATCH_INPUT_NAME = "batches"  # the agent's stream of signed batches, in namespace edge-agent://<id>
DEVICE_FALLBACK_NAMESPACE = "meterpipe-device"  # a device that is not a scheme://host/... URI
METER_READINGS_TABLE = "meter_readings"
TELEMETRY_TABLE = "transformer_telemetry"

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


@dataclass(frozen=True, slots=True)
class CommittedBatch:
    """What the core knows about one committed batch: the lineage of its readings."""

    agent_id: str
    sequence: int
    batch_id: int  # the ledger's surrogate key
    substation: str
    region: str
    devices: tuple[str, ...]  # e.g. "modbus://10.0.0.5:502/1", "mqtt://broker/topic"
    poll_start: dt.datetime | None  # earliest poll time of its readings (UTC)
    poll_end: dt.datetime | None
    created_at: dt.datetime  # sealed and signed by the agent
    received_at: dt.datetime  # reached the core
    committed_at: dt.datetime
    software_version: str  # edge agent version
    register_map_version: int
    validation_ruleset: str | None  # e.g. "vee-1"
    pseudonym_key_id: str
    core_version: str
    meter_readings: int  # readings in the batch
    readings_stored: int  # new rows (the rest were already stored)
    telemetry_points: int
    quality_counts: dict[str, int]  # quality flag name -> readings carrying it


@attr.define
class MeterpipeBatchRunFacet(RunFacet):
    """What the ledger records about the batch a run committed (facet key ``meterpipe_batch``).

    No standard facet carries these, so this is a custom facet, named as the spec asks
    (``{prefix}{name}{entity}Facet``, key ``{prefix}_{name}``), with its JSON schema at
    ``BATCH_FACET_SCHEMA_PATH``. The counts are not repeated here: the standard facets carry
    them.
    """

    agentId: str
    sequence: int
    batchId: int
    substation: str
    region: str
    devices: list[str]
    createdAt: str
    receivedAt: str
    softwareVersion: str
    registerMapVersion: int
    pseudonymKeyId: str
    validationRuleset: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return BATCH_FACET_SCHEMA_URL


def run_id(agent_id: str, sequence: int) -> uuid.UUID:
    """The batch's run id: the same for every emission of the batch, from any core.

    A name-based UUID (version 5) of the ledger row's key (agent_id, sequence), so a
    catalog's run leads back to the ledger, and through its batch_id to the readings. The
    sequence is an integer, so the last "/" separates the two unambiguously.
    """
    return uuid.uuid5(RUN_ID_NAMESPACE, f"{agent_id}/{sequence}")


def job_name(agent_id: str) -> str:
    """One job per agent: its runs read the same devices, so catalogs keep one job version.

    Catalogs version a job by its inputs and outputs (Marquez does); a single job for every
    agent would change version with nearly every batch and show only the last batch's devices.
    """
    return f"{JOB_NAME_PREFIX}.{agent_id}"


def device_dataset(device: str) -> tuple[str, str]:
    """The (namespace, name) of a device: scheme://authority and the path without its "/".

    ``modbus://10.0.0.5:502/1`` is unit 1 of the concentrator at 10.0.0.5:502, as OpenLineage
    names a Kafka topic within its broker; an MQTT topic keeps its slashes.
    """
    parts = urlsplit(device)
    if not (parts.scheme and parts.netloc):
        return DEVICE_FALLBACK_NAMESPACE, device
    return f"{parts.scheme}://{parts.netloc}", parts.path.removeprefix("/") or "/"


def build_event(batch: CommittedBatch, *, namespace: str, database_namespace: str) -> RunEvent:
    """The COMPLETE event of the batch's run; pure, so tests and the emitter thread share it.

    One event per run, not START then COMPLETE: the run (receive, verify, commit) is over
    before anything is emitted, so the event is a complete snapshot, as the job type facet
    declares. Its eventTime is the commit.
    """
    return RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=_timestamp(batch.committed_at),
        run=Run(runId=str(run_id(batch.agent_id, batch.sequence)), facets=_run_facets(batch)),
        job=Job(namespace=namespace, name=job_name(batch.agent_id), facets=_job_facets()),
        inputs=[*map(_device_input, batch.devices), _batch_input(batch)],
        outputs=_outputs(batch, database_namespace),
        producer=PRODUCER,
    )


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


def _run_facets(batch: CommittedBatch) -> dict[str, RunFacet]:
    """The core that committed it, the poll window it covers, and the ledger's lineage fields.

    ``nominalTime`` is the window the readings were polled in (the data's time, not the
    commit's), so a catalog can find the run that brought in a given period.
    """
    facets: dict[str, RunFacet] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=batch.core_version, name="core-ingest", producer=PRODUCER
        ),
        "meterpipe_batch": MeterpipeBatchRunFacet(
            agentId=batch.agent_id,
            sequence=batch.sequence,
            batchId=batch.batch_id,
            substation=batch.substation,
            region=batch.region,
            devices=list(batch.devices),
            createdAt=_timestamp(batch.created_at),
            receivedAt=_timestamp(batch.received_at),
            softwareVersion=batch.software_version,
            registerMapVersion=batch.register_map_version,
            pseudonymKeyId=batch.pseudonym_key_id,
            validationRuleset=batch.validation_ruleset,
            producer=PRODUCER,
        ),
    }
    if batch.poll_start is not None:
        facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
            nominalStartTime=_timestamp(batch.poll_start),
            nominalEndTime=_timestamp(batch.poll_end) if batch.poll_end else None,
            producer=PRODUCER,
        )
    return facets


def _job_facets() -> dict[str, JobFacet]:
    """BATCH, not STREAMING: each run is one finite batch with a commit as its end.

    The spec's STREAMING means a run with no natural end; here the stream is the job and each
    batch a run. EVENT_BASED / COMPLETE_SNAPSHOT: one self-contained event per run.
    """
    return {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH",
            integration="METERPIPE",
            emissionPattern=job_type_job.EmissionPattern(
                eventTrigger="EVENT_BASED", eventContentMode="COMPLETE_SNAPSHOT"
            ),
            producer=PRODUCER,
        )
    }


def _device_input(device: str) -> InputDataset:
    namespace, name = device_dataset(device)
    return InputDataset(namespace=namespace, name=name)


def _batch_input(batch: CommittedBatch) -> InputDataset:
    """The agent's signed batch, carrying the data-quality metrics of its meter readings.

    The counts are per batch, not per device, so they cannot sit on a device's input without
    being counted once per device: they sit on the input the run read them from, the agent's
    batch stream. Each quality flag is a column ``quality_flags.<FLAG>`` of 0/1 values: ``sum``
    is the readings carrying the flag, ``count`` the readings evaluated (the spec's
    DataQualityMetrics has no "count of rows matching" metric; an indicator column's sum is
    exactly that).
    """
    metrics = data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
        rowCount=batch.meter_readings,
        columnMetrics={
            f"quality_flags.{flag}": data_quality_metrics_input_dataset.ColumnMetrics(
                sum=readings, count=batch.meter_readings, quantiles=None
            )
            for flag, readings in sorted(batch.quality_counts.items())
        },
        producer=PRODUCER,
    )
    return InputDataset(
        namespace=f"edge-agent://{quote(batch.agent_id, safe='')}",
        name=BATCH_INPUT_NAME,
        inputFacets={"dataQualityMetrics": metrics},
    )


def _outputs(batch: CommittedBatch, database_namespace: str) -> list[OutputDataset]:
    """The tables the batch had rows for, each with the rows the run added (outputStatistics).

    A reading already stored is not added again, so meter_readings counts ``readings_stored``;
    every telemetry point of a committed batch is written.
    """
    rows = {
        METER_READINGS_TABLE: (batch.meter_readings, batch.readings_stored),
        TELEMETRY_TABLE: (batch.telemetry_points, batch.telemetry_points),
    }
    return [
        _output(database_namespace, table, added) for table, (sent, added) in rows.items() if sent
    ]


def _output(namespace: str, table: str, added: int) -> OutputDataset:
    statistics = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=added, producer=PRODUCER
    )
    return OutputDataset(
        namespace=namespace, name=table, outputFacets={"outputStatistics": statistics}
    )


@dataclass(frozen=True, slots=True)
class LineageStatistics:
    """Counts since start: what the emitter did with the batches it was given."""

    emitted: int  # accepted by the transport (written to the file, or 2xx from HTTP)
    failed: int  # built or sent and refused: the transport raised
    dropped: int  # not queued: the queue was full, or the emitter closed
    queued: int  # waiting for the sending thread now


_STOP = object()  # queued by close(): the sending thread ends after everything before it


class _QuietRetries(logging.Filter):
    """Hides urllib3's WARNING for each retried request when the sending thread made it.

    A consumer that is down would otherwise log two lines per event; the emitter logs each
    kind of failure once instead. Other threads' urllib3 records pass untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != SEND_THREAD_NAME


class LineageEmitter:
    """Sends one OpenLineage event per committed batch from a thread, never from the caller.

    Delivery is best-effort: the ledger in the database is the lineage of record, these events
    are a copy for catalogs. ``emit`` only puts the batch on a bounded queue (a few
    microseconds, never waiting), so the ingest loop's speed does not depend on the consumer's.
    When the queue is full the batch is dropped; when building or sending fails the event is
    lost. Both are counted (``statistics()``) and logged at WARNING once per kind of failure,
    not once per event; a failing consumer that recovers is logged once at INFO.
    """

    def __init__(self, config: LineageConfig) -> None:
        """Args: config: the validated ``[openlineage]`` table (see ``parse_lineage_config``)."""
        self.config = config
        self._queue: queue.Queue[CommittedBatch | object] = queue.Queue(config.max_queued_events)
        self._thread: threading.Thread | None = None
        self._closed = False
        # Each counter has one writer: emit() (the caller's thread) or the sending thread.
        self._emitted = self._failed = self._dropped = 0
        self._warned_dropped = False
        self._failing: set[str] = set()  # kinds of failure logged since the last success
        self._quiet_retries = _QuietRetries()

    @property
    def emitted(self) -> int:
        """Events the transport accepted."""
        return self._emitted

    @property
    def failed(self) -> int:
        """Events lost because building or sending them raised."""
        return self._failed

    @property
    def dropped(self) -> int:
        """Batches not queued: the queue was full or the emitter closed."""
        return self._dropped

    def statistics(self) -> LineageStatistics:
        """The counters and the queue's length, for metrics and status output."""
        return LineageStatistics(self._emitted, self._failed, self._dropped, self._queue.qsize())

    def start(self) -> None:
        """Open the transport and start the sending thread; batches emitted before wait queued.

        Raises:
            RuntimeError: when started twice.

        """
        if self._thread is not None:
            raise RuntimeError("the lineage emitter is already started")
        client = OpenLineageClient(transport=_transport(self.config))
        logging.getLogger("urllib3.connectionpool").addFilter(self._quiet_retries)
        # A daemon: a consumer that hangs must not keep the core from exiting.
        self._thread = threading.Thread(
            target=self._send_loop, args=(client,), name=SEND_THREAD_NAME, daemon=True
        )
        self._thread.start()

    def emit(self, batch: CommittedBatch) -> None:
        """Queue the batch's event; never blocks and never raises (a full queue drops it)."""
        if self._closed:
            self._drop("the emitter is closed")
            return
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self._drop(f"the queue is full ({self.config.max_queued_events} events)")

    def close(self, timeout: float = 5.0) -> bool:
        """Send what is queued, then stop; True when all of it was handled within ``timeout``.

        Batches emitted after ``close`` are dropped. After a timeout the thread carries on
        with the queue in the background and ends with the process.
        """
        self._closed = True
        if self._thread is None:
            return self._queue.empty()
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return self._unfinished(timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return self._unfinished(timeout)
        logging.getLogger("urllib3.connectionpool").removeFilter(self._quiet_retries)
        return True

    def _unfinished(self, timeout: float) -> bool:
        log.warning(
            "OpenLineage: %d events still queued after %.1f s; they are sent in the background"
            " until the process exits",
            self._queue.qsize(),
            timeout,
        )
        return False

    def _drop(self, reason: str) -> None:
        self._dropped += 1
        if not self._warned_dropped:
            self._warned_dropped = True
            log.warning(
                "OpenLineage: dropping lineage events, %s; the database keeps the lineage."
                " Further drops are only counted",
                reason,
            )

    def _send_loop(self, client: OpenLineageClient) -> None:
        while (batch := self._queue.get()) is not _STOP:
            self._send(client, cast("CommittedBatch", batch))
        client.close()  # the HTTP transport's connection pool; nothing is buffered in it

    def _send(self, client: OpenLineageClient, batch: CommittedBatch) -> None:
        """Build and send one event; any failure is counted, logged once per kind, and dropped."""
        try:
            event = build_event(
                batch,
                namespace=self.config.namespace,
                database_namespace=self.config.database_namespace,
            )
            client.emit(event)
        except Exception as exc:  # noqa: BLE001 - best-effort: no failure may stop the thread
            self._failed += 1
            self._log_failure(exc)
            return
        self._emitted += 1
        if self._failing:
            log.info("OpenLineage: events are accepted again (%d failed so far)", self._failed)
            self._failing.clear()

    def _log_failure(self, exc: Exception) -> None:
        kind = type(exc).__name__
        if kind in self._failing:
            return
        self._failing.add(kind)
        log.warning(
            "OpenLineage: sending a lineage event to %s failed (%s: %s); the database keeps the"
            " lineage. Further failures of this kind are only counted until one succeeds",
            self._destination(),
            kind,
            exc,
        )

    def _destination(self) -> str:
        return str(self.config.path) if self.config.transport == "file" else str(self.config.url)


def _transport(config: LineageConfig) -> Transport:
    """The library's file transport (appending JSON lines) or HTTP transport, from the config."""
    if config.transport == "file":
        return FileTransport(FileConfig(log_file_path=str(config.path), append=True))
    return HttpTransport(
        HttpConfig.from_dict(
            {
                "url": config.url,
                "endpoint": config.endpoint,
                "timeout": config.timeout_seconds,
                "retry": HTTP_RETRY,
            }
        )
    )
