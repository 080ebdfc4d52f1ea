"""OpenLineage run events of anonymized exports, rebuilt from the ``exports`` record.

Each export is a run of the job ``governance.export.<dataset>``: it read ``meter_readings``
and ``meters`` (in the core's database namespace) and wrote one file (namespace ``file``,
with its row count). What was asked and measured (filter, k, l, measured k and l, area level,
suppressed meters, key ids, the file's SHA-256, who exported) is a custom run facet,
``meterpipe_export``, with its JSON schema beside the batch facet's. ``governance lineage
export`` writes these with the core's batch runs, so a catalog shows where readings went.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import attr
import psycopg
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    JobFacet,
    RunFacet,
    job_type_job,
    nominal_time_run,
    output_statistics_output_dataset,
)

from proto.lineage_names import PROJECT_URL, producer

PRODUCER = producer("governance")
EXPORT_FACET_SCHEMA_PATH = "docs/openlineage/facets/1-0-0/MeterpipeExportRunFacet.json"
EXPORT_FACET_SCHEMA_URL = f"{PROJECT_URL}/{EXPORT_FACET_SCHEMA_PATH}#/$defs/MeterpipeExportRunFacet"
# Fixed forever: an export's run id is the same whenever its event is rebuilt.
RUN_ID_NAMESPACE = uuid.UUID("0b6f2f4e-3c1d-4a8e-b7f5-92d4e1a6c305")
READ_TABLES = ("meter_readings", "meters")
EXPORTS = """
SELECT export_id, dataset, filter, k, l, measured_k, measured_l, area_level, meters,
       suppressed, key_ids, file_name, encode(file_sha256, 'hex'), made_by, made_at
FROM exports WHERE made_at >= %s AND made_at < %s ORDER BY export_id
"""


@attr.define
class MeterpipeExportRunFacet(RunFacet):
    """What an export asked for and what was measured on it (facet key ``meterpipe_export``)."""

    exportId: int
    dataset: str
    filter: dict[str, Any]
    k: int
    l: int | None  # noqa: E741 - as the literature names it
    measuredK: int
    measuredL: int | None
    areaLevel: str
    suppressed: int
    keyIds: list[str]
    sha256: str
    madeBy: str

    @staticmethod
    def _get_schema() -> str:
        return EXPORT_FACET_SCHEMA_URL


def export_events(
    conn: psycopg.Connection,
    start: dt.datetime,
    end: dt.datetime,
    *,
    namespace: str,
    database_namespace: str,
) -> list[RunEvent]:
    """The run event of every export recorded in [start, end)."""
    return [
        build_event(row, namespace=namespace, database_namespace=database_namespace)
        for row in conn.execute(EXPORTS, (start, end)).fetchall()
    ]


def build_event(row: tuple[Any, ...], *, namespace: str, database_namespace: str) -> RunEvent:
    """One COMPLETE event from an ``exports`` row (in ``EXPORTS`` order)."""
    names = ("exportId", "dataset", "filter", "k", "l", "measuredK", "measuredL", "areaLevel",
             "meters", "suppressed", "keyIds", "file", "sha256", "madeBy", "madeAt")  # fmt: skip
    fields = dict(zip(names, row, strict=True))
    file_name, meters, made_at = fields.pop("file"), fields.pop("meters"), fields.pop("madeAt")
    asked = fields["filter"]
    facets: dict[str, RunFacet] = {
        "meterpipe_export": MeterpipeExportRunFacet(**fields, producer=PRODUCER),
    }
    if asked.get("since") and asked.get("until"):
        facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
            nominalStartTime=asked["since"], nominalEndTime=asked["until"], producer=PRODUCER
        )
    statistics = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=meters, producer=PRODUCER
    )
    return RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=made_at.astimezone(dt.UTC).isoformat(),
        run=Run(runId=str(uuid.uuid5(RUN_ID_NAMESPACE, str(fields["exportId"]))), facets=facets),
        job=Job(
            namespace=namespace, name=f"governance.export.{fields['dataset']}", facets=_job_facets()
        ),
        inputs=[InputDataset(namespace=database_namespace, name=name) for name in READ_TABLES],
        outputs=[
            OutputDataset(
                namespace="file", name=file_name, outputFacets={"outputStatistics": statistics}
            )
        ],
        producer=PRODUCER,
    )


def _job_facets() -> dict[str, JobFacet]:
    return {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="METERPIPE", jobType="EXPORT", producer=PRODUCER
        )
    }
