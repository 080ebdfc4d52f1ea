"""A Prometheus text endpoint for the core's counters (``[metrics] listen``).

Served by the standard library's threading HTTP server on its own thread, so a scrape never
waits for the ingest loop and the ingest loop never waits for a scrape: the counters are plain
integers the loop increments and the scrape reads (a read may be one increment behind).
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter sample: name (with ``_total``), help text, labels, value."""

    name: str
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


def exposition(samples: Iterable[Counter]) -> str:
    """The Prometheus text format of ``samples``; HELP and TYPE once per metric name."""
    lines: list[str] = []
    described: set[str] = set()
    for sample in samples:
        if sample.name not in described:
            described.add(sample.name)
            lines += [f"# HELP {sample.name} {sample.help}", f"# TYPE {sample.name} counter"]
        labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sample.labels)
        lines.append(
            f"{sample.name}{{{labels}}} {sample.value:g}"
            if labels
            else f"{sample.name} {sample.value:g}"
        )
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """``GET /metrics`` on ``host:port`` until ``close()``; anything else is 404."""

    def __init__(self, listen: str, collect: Callable[[], Iterable[Counter]]) -> None:
        """Bind now (so a taken port fails at start), serve after ``start()``.

        Raises:
            OSError: the address cannot be bound.

        """
        host, _, port = listen.rpartition(":")
        collect_samples = collect

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exposition(collect_samples()).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("metrics request: %s", format % args)

        self._server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        """Serve scrapes on a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
