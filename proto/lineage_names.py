"""How OpenLineage names this project's datasets and producers.

Shared by the core's run events (a committed batch's outputs) and governance's catalog events
(each table's schema, documentation and ownership): the same namespace and names, so a
Marquez or DataHub user sees one dataset with both its lineage and its description.
"""

from __future__ import annotations

from proto.version import __version__

# Where the core's tables live, as OpenLineage names a PostgreSQL server (postgres://host:port).
# One database per region (DESIGN.md) means one namespace each: set it per deployment.
DEFAULT_DATABASE_NAMESPACE = "postgres://meterpipe"
# meterpipe has no public home yet: ``.invalid`` (RFC 2606) marks these URIs as placeholders.
# TODO: the published location, once there is one.
PROJECT_URL = "https://meterpipe.invalid"


def producer(package: str) -> str:
    """The producer URI of events and facets one of the project's packages writes."""
    return f"{PROJECT_URL}/tree/v{__version__}/{package}"
