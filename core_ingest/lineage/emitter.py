"""Sends the OpenLineage events of committed batches from a thread: a best-effort copy.

The database's ``batches`` ledger is the authoritative lineage; this copies each committed
batch to an OpenLineage consumer (a JSON-lines file or an HTTP endpoint such as Marquez) so data
catalogs can show it. docs/lineage.md describes the events and the ``[openlineage]`` table.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import cast

from openlineage.client import OpenLineageClient
from openlineage.client.transport import Transport
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import HttpConfig, HttpTransport

from core_ingest.lineage.config import LineageConfig
from core_ingest.lineage.events import build_event
from core_ingest.lineage.record import CommittedBatch

log = logging.getLogger(__name__)

MAX_QUEUED_EVENTS_LIMIT = 1_000_000
# Two retries (the library's default is five): a consumer that is down would otherwise hold
# the one sending thread about 9 s per event in backoff; the queue absorbs short outages.
HTTP_RETRY = {"total": 2, "connect": 2, "read": 2}
SEND_THREAD_NAME = "core_ingest.lineage.emitter"


@dataclass(frozen=True, slots=True)
class LineageStatistics:
    """Counts since start: what the emitter did with the batches it was given."""

    emitted: int  # accepted by the transport (written to the file, or 2xx from HTTP)
    failed: int  # built or sent and refused: the transport raised
    dropped: int  # not queued: the queue was full, or the emitter closed
    queued: int  # waiting for the sending thread now


_STOP = object()  # queued by close(): the sending thread ends after everything before it


class _QuietRetries(logging.Filter):
    """Hides urllib3's WARNING for each retried request when the sending thread made it.

    A consumer that is down would otherwise log two lines per event; the emitter logs each
    kind of failure once instead. Other threads' urllib3 records pass untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != SEND_THREAD_NAME


class LineageEmitter:
    """Sends one OpenLineage event per committed batch from a thread, never from the caller.

    Delivery is best-effort: the ledger in the database is the lineage of record, these events
    are a copy for catalogs. ``emit`` only puts the batch on a bounded queue (a few
    microseconds, never waiting), so the ingest loop's speed does not depend on the consumer's.
    When the queue is full the batch is dropped; when building or sending fails the event is
    lost. Both are counted (``statistics()``) and logged at WARNING once per kind of failure,
    not once per event; a failing consumer that recovers is logged once at INFO.
    """

    def __init__(self, config: LineageConfig) -> None:
        """Args: config: the validated ``[openlineage]`` table (see ``parse_lineage_config``)."""
        self.config = config
        self._queue: queue.Queue[CommittedBatch | object] = queue.Queue(config.max_queued_events)
        self._thread: threading.Thread | None = None
        self._closed = False
        # Each counter has one writer: emit() (the caller's thread) or the sending thread.
        self._emitted = self._failed = self._dropped = 0
        self._warned_dropped = False
        self._failing: set[str] = set()  # kinds of failure logged since the last success
        self._quiet_retries = _QuietRetries()

    @property
    def emitted(self) -> int:
        """Events the transport accepted."""
        return self._emitted

    @property
    def failed(self) -> int:
        """Events lost because building or sending them raised."""
        return self._failed

    @property
    def dropped(self) -> int:
        """Batches not queued: the queue was full or the emitter closed."""
        return self._dropped

    def statistics(self) -> LineageStatistics:
        """The counters and the queue's length, for metrics and status output."""
        return LineageStatistics(self._emitted, self._failed, self._dropped, self._queue.qsize())

    def start(self) -> None:
        """Open the transport and start the sending thread; batches emitted before wait queued.

        Raises:
            RuntimeError: when started twice.

        """
        if self._thread is not None:
            raise RuntimeError("the lineage emitter is already started")
        client = OpenLineageClient(transport=_transport(self.config))
        logging.getLogger("urllib3.connectionpool").addFilter(self._quiet_retries)
        # A daemon: a consumer that hangs must not keep the core from exiting.
        self._thread = threading.Thread(
            target=self._send_loop, args=(client,), name=SEND_THREAD_NAME, daemon=True
        )
        self._thread.start()

    def emit(self, batch: CommittedBatch) -> None:
        """Queue the batch's event; never blocks and never raises (a full queue drops it)."""
        if self._closed:
            self._drop("the emitter is closed")
            return
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self._drop(f"the queue is full ({self.config.max_queued_events} events)")

    def close(self, timeout: float = 5.0) -> bool:
        """Send what is queued, then stop; True when all of it was handled within ``timeout``.

        Batches emitted after ``close`` are dropped. After a timeout the thread carries on
        with the queue in the background and ends with the process.
        """
        self._closed = True
        if self._thread is None:
            return self._queue.empty()
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return self._unfinished(timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return self._unfinished(timeout)
        logging.getLogger("urllib3.connectionpool").removeFilter(self._quiet_retries)
        return True

    def _unfinished(self, timeout: float) -> bool:
        log.warning(
            "OpenLineage: %d events still queued after %.1f s; they are sent in the background"
            " until the process exits",
            self._queue.qsize(),
            timeout,
        )
        return False

    def _drop(self, reason: str) -> None:
        self._dropped += 1
        if not self._warned_dropped:
            self._warned_dropped = True
            log.warning(
                "OpenLineage: dropping lineage events, %s; the database keeps the lineage."
                " Further drops are only counted",
                reason,
            )

    def _send_loop(self, client: OpenLineageClient) -> None:
        while (batch := self._queue.get()) is not _STOP:
            self._send(client, cast("CommittedBatch", batch))
        client.close()  # the HTTP transport's connection pool; nothing is buffered in it

    def _send(self, client: OpenLineageClient, batch: CommittedBatch) -> None:
        """Build and send one event; any failure is counted, logged once per kind, and dropped."""
        try:
            event = build_event(
                batch,
                namespace=self.config.namespace,
                database_namespace=self.config.database_namespace,
            )
            client.emit(event)
        except Exception as exc:  # noqa: BLE001 - best-effort: no failure may stop the thread
            self._failed += 1
            self._log_failure(exc)
            return
        self._emitted += 1
        if self._failing:
            log.info("OpenLineage: events are accepted again (%d failed so far)", self._failed)
            self._failing.clear()

    def _log_failure(self, exc: Exception) -> None:
        kind = type(exc).__name__
        if kind in self._failing:
            return
        self._failing.add(kind)
        log.warning(
            "OpenLineage: sending a lineage event to %s failed (%s: %s); the database keeps the"
            " lineage. Further failures of this kind are only counted until one succeeds",
            self._destination(),
            kind,
            exc,
        )

    def _destination(self) -> str:
        return str(self.config.path) if self.config.transport == "file" else str(self.config.url)


def _transport(config: LineageConfig) -> Transport:
    """The library's file transport (appending JSON lines) or HTTP transport, from the config."""
    if config.transport == "file":
        return FileTransport(FileConfig(log_file_path=str(config.path), append=True))
    return HttpTransport(
        HttpConfig.from_dict(
            {
                "url": config.url,
                "endpoint": config.endpoint,
                "timeout": config.timeout_seconds,
                "retry": HTTP_RETRY,
            }
        )
    )
