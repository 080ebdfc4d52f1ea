"""Long work says how far it is: a bar on a terminal (tqdm), a log line now and then otherwise.

Backfill after an outage, draining a backlog, a key rotation, an export, a benchmark: a person
at a terminal sees a bar; a daemon under systemd (stderr is the journal) logs one line every
``every_seconds`` with the count, the share, the rate and the time left, and one when done.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

LOG_EVERY_SECONDS = 10.0


class Progress:
    """How far ``what`` is, out of ``total`` (``advance`` as it goes, ``close`` at the end)."""

    def __init__(  # noqa: PLR0913 - keyword-only presentation settings
        self,
        what: str,
        total: int,
        *,
        unit: str = "",
        log: logging.Logger,
        every_seconds: float = LOG_EVERY_SECONDS,
        stream: TextIO | None = None,
    ) -> None:
        """A bar when ``stream`` (stderr) is a terminal, else log lines on ``log``."""
        stream = stream or sys.stderr
        self.what, self.total, self.unit, self.done = what, total, unit, 0
        self._log, self._every = log, every_seconds
        self._started = self._logged = time.monotonic()
        self._bar = (
            tqdm(total=total, desc=what, unit=f" {unit}" if unit else "it", file=stream)
            if stream.isatty()
            else None
        )

    def advance(self, count: int = 1) -> None:
        """``count`` more done."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif time.monotonic() - self._logged >= self._every:
            self._logged = time.monotonic()
            self._log.info("%s", self.line())

    def set_done(self, done: int) -> None:
        """Where it stands now (for work measured from outside, e.g. a shrinking backlog)."""
        self.advance(done - self.done)

    def line(self) -> str:
        """``backfill conc-1: 12/96 intervals (12 %), 3.1/s, about 27 s left``."""
        elapsed = time.monotonic() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = self.done / self.total if self.total else 1.0
        line = f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({share:.0%}), {rate:,.1f}/s"
        if rate > 0 and self.done < self.total:
            line += f", about {(self.total - self.done) / rate:,.0f} s left"
        return line

    def close(self) -> None:
        """The bar finished, or one last line logged."""
        if self._bar is not None:
            self._bar.close()
        else:
            elapsed = time.monotonic() - self._started
            self._log.info(
                "%s: %s/%s %s in %.1f s",
                self.what,
                f"{self.done:,}",
                f"{self.total:,}",
                self.unit,
                elapsed,
            )

    def __enter__(self) -> Progress:
        """``with Progress(...) as progress:`` closes it at the end."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close it, whatever happened."""
        self.close()
