"""The release's version: the one place it is written (pyproject.toml reads it from here).

Every deployable reports it: the edge agent in each batch's header, the core in the ledger, its
health answer and its lineage events.
"""

__version__ = "0.1.0"
