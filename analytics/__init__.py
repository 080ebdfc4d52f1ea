"""Batch analytics over the database the pipeline fills: transformer health first.

Its own deployable (the ``analytics`` extra), never imported by the edge agent or the core's
ingest path; it reads the database as the ``analyst`` or ``data_scientist`` roles would.
"""
