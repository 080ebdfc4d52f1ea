"""The catalog as OpenLineage dataset events: what a Marquez or DataHub user sees of each table.

One ``DatasetEvent`` per dictionary object, in the namespace and under the name the core's run
events give its tables (``proto.lineage_names``), so each dataset carries both its lineage and
its description. Standard facets only: ``schema`` (live column types, descriptions with
units), ``documentation``, ``ownership`` (owner and steward), ``datasetType`` (TABLE or VIEW,
the storage as subtype) and ``tags`` (personal-data class, retention, region path, and each
column whose class differs from its table's).
"""

from __future__ import annotations

import datetime as dt

from openlineage.client.event_v2 import DatasetEvent, StaticDataset
from openlineage.client.facet_v2 import (
    DatasetFacet,
    dataset_type_dataset,
    documentation_dataset,
    ownership_dataset,
    schema_dataset,
    tags_dataset,
)

from governance.catalog import DatasetEntry
from proto.lineage_names import producer

PRODUCER = producer("governance")
TAG_SOURCE = "meterpipe data dictionary"


def dataset_event(entry: DatasetEntry, *, namespace: str, at: dt.datetime) -> DatasetEvent:
    """The event describing one catalogued object."""
    dataset = entry.dataset
    facets: dict[str, DatasetFacet] = {
        "schema": schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(
                    name=column.name,
                    type=column.type,
                    description=(
                        f"{column.description} ({column.unit})"
                        if column.unit
                        else column.description
                    ),
                )
                for column in entry.columns
            ],
            producer=PRODUCER,
        ),
        "documentation": documentation_dataset.DocumentationDatasetFacet(
            description=dataset.description, producer=PRODUCER
        ),
        "ownership": ownership_dataset.OwnershipDatasetFacet(
            owners=[
                ownership_dataset.Owner(name=f"team:{dataset.owner}", type="owner"),
                ownership_dataset.Owner(name=f"team:{dataset.steward}", type="steward"),
            ],
            producer=PRODUCER,
        ),
        "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(
            datasetType="VIEW" if dataset.kind == "view" else "TABLE",
            subType=entry.storage,
            producer=PRODUCER,
        ),
        "tags": tags_dataset.TagsDatasetFacet(tags=_tags(entry), producer=PRODUCER),
    }
    return DatasetEvent(
        eventTime=at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        producer=PRODUCER,
        dataset=StaticDataset(namespace=namespace, name=dataset.name, facets=facets),
    )


def _tags(entry: DatasetEntry) -> list[tags_dataset.TagsDatasetFacetFields]:
    dataset = entry.dataset
    tags = [
        tags_dataset.TagsDatasetFacetFields(
            key="personal_data", value=dataset.personal_data, source=TAG_SOURCE
        ),
        tags_dataset.TagsDatasetFacetFields(
            key="retention", value=dataset.retention, source=TAG_SOURCE
        ),
    ]
    if entry.region:
        tags.append(
            tags_dataset.TagsDatasetFacetFields(key="region", value=entry.region, source=TAG_SOURCE)
        )
    tags += [
        tags_dataset.TagsDatasetFacetFields(
            key="personal_data", value=column.personal_data, source=TAG_SOURCE, field=column.name
        )
        for column in entry.columns
        if column.personal_data != dataset.personal_data
    ]
    return tags
