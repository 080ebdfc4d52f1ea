"""OpenLineage run events for committed batches: pure builders, shared by tests and the emitter.

docs/lineage.md describes the events.
"""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import quote, urlsplit

import attr
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

from core_ingest.lineage.record import CommittedBatch
from proto.lineage_names import PROJECT_URL, producer

DEFAULT_NAMESPACE = "meterpipe"
PRODUCER = producer("core_ingest")
# The facet schema's path is its path in this repository; a new version of the facet gets a
# new folder, never an edited file.
BATCH_FACET_SCHEMA_PATH = "docs/openlineage/facets/1-0-0/MeterpipeBatchRunFacet.json"
BATCH_FACET_SCHEMA_URL = f"{PROJECT_URL}/{BATCH_FACET_SCHEMA_PATH}#/$defs/MeterpipeBatchRunFacet"
# Fixed forever: run ids computed by any release (or by a query on the ledger) must agree.
RUN_ID_NAMESPACE = uuid.UUID("5d0f3c1e-8a4b-4f6e-9c2d-7b1a0e6f4c83")
JOB_NAME_PREFIX = "core_ingest.batch"
BATCH_INPUT_NAME = "batches"  # the agent's stream of signed batches, in namespace edge-agent://<id>
DEVICE_FALLBACK_NAMESPACE = "meterpipe-device"  # a device that is not a scheme://host/... URI
METER_READINGS_TABLE = "meter_readings"
TELEMETRY_TABLE = "transformer_telemetry"


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
