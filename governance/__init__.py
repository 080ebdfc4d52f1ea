"""What data owners, stewards and auditors use against the central database.

Only the catalog exists so far; lineage, roles, audit, exports and data-subject requests follow.
"""
