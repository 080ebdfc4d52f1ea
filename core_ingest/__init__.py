"""The central ingest service: verify signed batches and store them exactly once.

By stage: ``receive`` (the gRPC servicer) → ``verify`` (a batch becomes verified or refused)
→ ``store`` (one transaction per batch); ``lineage`` records each committed batch and copies it
to OpenLineage, best-effort; ``server`` wires them together, ``cli`` is the ``core-ingest``
command. Beside them: ``migrations`` owns the schema, ``agents`` the enrolled keys,
``quality_watch`` the suspect-share alert, ``certificates`` the mutual-TLS material.
"""

from proto.version import __version__  # one version for the release

__all__ = ["__version__"]
