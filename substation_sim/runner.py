"""Serve concentrators over Modbus TCP and drive their clock, faster than real time if asked."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from pymodbus.server import ModbusTcpServer

from substation_sim.concentrator import Concentrator
from substation_sim.register_map import INTERVAL_SECONDS
from substation_sim.served import ServedLog

log = logging.getLogger(__name__)


class SimulatorRunner:
    """One Modbus TCP server for a set of concentrators (one unit id each) plus its clock.

    Use ``async with`` to listen; then either ``await run_clock(...)`` to close intervals as
    simulated time passes, or call ``close_interval()`` to step by hand (tests do).
    """

    def __init__(
        self,
        *,
        concentrators: list[Concentrator],
        host: str,
        port: int,
        served_path: Path,
        start: int,
    ) -> None:
        """Prepare the server; nothing listens before ``__aenter__``.

        Args:
            concentrators: devices to serve, with distinct unit ids.
            host: address to listen on, e.g. ``127.0.0.1``.
            port: TCP port (502 is the Modbus standard; tests use a free high port).
            served_path: SQLite file of what was served.
            start: simulated time at the start, Unix seconds on a 15-minute boundary.

        """
        units = [c.unit_id for c in concentrators]
        if len(set(units)) != len(units):
            raise ValueError(f"concentrator unit ids must be distinct, got {units}")
        if start % INTERVAL_SECONDS:
            raise ValueError(f"start {start} is not on a 15-minute boundary")
        self.concentrators = concentrators
        self.address = (host, port)
        self.served = ServedLog(served_path)
        self.sim_time = start
        self._server: ModbusTcpServer | None = None

    async def __aenter__(self) -> SimulatorRunner:
        """Start listening."""
        self._server = ModbusTcpServer(
            [c.sim_device() for c in self.concentrators], address=self.address
        )
        await self._server.serve_forever(background=True)
        log.info("serving %d concentrators on %s:%d", len(self.concentrators), *self.address)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        """Stop listening and close the served record."""
        if self._server is not None:
            await self._server.shutdown()
        self.served.close()

    def close_interval(self) -> int:
        """Advance simulated time by one interval on every concentrator; return its end."""
        self.sim_time += INTERVAL_SECONDS
        for concentrator in self.concentrators:
            self.served.record(concentrator.close_interval(self.sim_time))
        return self.sim_time

    async def run_clock(self, *, speed: float, intervals: int | None) -> None:
        """Close an interval every ``900 / speed`` wall-clock seconds, ``intervals`` times.

        With ``intervals`` None it runs until cancelled. After the last interval it keeps
        serving the final values until cancelled, so a late poll still finds them.
        """
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        period = INTERVAL_SECONDS / speed
        next_close = time.monotonic() + period
        closed = 0
        while intervals is None or closed < intervals:
            await asyncio.sleep(max(0.0, next_close - time.monotonic()))
            end = self.close_interval()
            closed += 1
            log.info("closed interval ending %d (%d/%s)", end, closed, intervals or "∞")
            next_close += period
        await asyncio.Event().wait()
