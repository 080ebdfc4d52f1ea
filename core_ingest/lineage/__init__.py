"""Lineage of committed batches: the record, its OpenLineage events, and their sending.

``record`` is what the store builds per commit; ``events`` the pure OpenLineage builders;
``emitter`` sends them best-effort, as ``config`` (the ``[openlineage]`` table) says. Storage
imports only ``record``: how (or whether) lineage is sent never reaches the store.
"""
