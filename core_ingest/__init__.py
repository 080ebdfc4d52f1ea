"""The central ingest service: verify signed batches and store them exactly once.

Layers: ``migrations`` own the schema, ``agents`` the enrolled keys, ``store`` writes batches,
``service`` is the gRPC server, ``cli`` the ``core-ingest`` command; ``lineage_events`` copies
each committed batch to OpenLineage, best-effort; ``pgcluster`` starts a throwaway PostgreSQL
for the demo and the tests.
"""

__version__ = "0.1.0"
