"""Storage: a verified batch committed exactly once, in one transaction.

``writer`` runs the transaction; it writes the ledger row (``ledger``), the readings
(``readings``, laid out by ``reading_rows``), the telemetry (``telemetry``), the meters
dimension (``meters``), the rollups (``rollups``) and, for native partitioning, the day's
partitions (``partitions``). ``batch`` defines what the store accepts. Storage never raises
the wire protocol's errors and never imports the lineage emitter: it answers ``Stored`` and
hands back the lineage record.
"""
