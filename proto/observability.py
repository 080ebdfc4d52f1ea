"""How both daemons are observed: their logs and their metrics endpoint, one convention.

Logs: one line per event, as text for people or JSON lines for collectors.

The JSON fields are the same in the edge agent and the core (``FIELDS``), so one log pipeline
(Vector, Fluent Bit, Loki) parses both: ``time`` (ISO 8601, UTC), ``level``, ``process``
(``edge-agent`` or ``core-ingest``), ``logger`` (the module), ``message``, and ``error`` with
the traceback when there is one. The formatter is python-json-logger's.

Metrics: each daemon keeps its own prometheus-client registry; ``serve_metrics`` exposes one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import click

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

LogFormat = Literal["text", "json"]
FIELDS = ("time", "level", "process", "logger", "message", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _Process(logging.Filter):
    """Adds the daemon's name to every record, as ``process_name``."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_name = self.process
        return True


def configure_logging(process: str, *, verbose: bool, log_format: LogFormat = "text") -> None:
    """Log to stderr at INFO (DEBUG when ``verbose``), as text or as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Process(process))
    if log_format == "json":
        # Loaded when asked for, like prometheus-client below: a gateway keeps what it uses.
        from pythonjsonlogger.json import JsonFormatter  # noqa: PLC0415

        formatter: logging.Formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(process_name)s %(name)s %(message)s",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "process_name": "process",
                "name": "logger",
                "exc_info": "error",
            },
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def log_options(envvar: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-v/--verbose`` and ``--log-format`` (also from ``envvar``) for a daemon's command group."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            default="text",
            envvar=envvar,
            show_default=True,
            help=f"json: one JSON object per line, the same fields in both daemons. Env: {envvar}.",
        )(command)
        return click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")(command)

    return decorate


def serve_metrics(registry: CollectorRegistry, listen: str) -> Callable[[], None]:
    """Serve ``GET /metrics`` of ``registry`` on ``host:port`` from a thread; return its stop.

    Raises:
        OSError: the address cannot be bound.

    """
    from prometheus_client import start_http_server  # noqa: PLC0415 - only when served

    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host, registry=registry)
    logging.getLogger(__name__).info("metrics on http://%s/metrics", listen)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
