"""A cancellation pymodbus swallows still stops the agent's Modbus source.

pymodbus waits for replies with ``asyncio.wait_for``, which in Python 3.11 can lose a
cancellation arriving with the reply: the agent then polled on after SIGTERM and never stopped
(seen in about one stop in three with 24 devices). The fake client below does exactly what
``wait_for`` does in that race: the cancellation reaches it, is swallowed, the reply returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest

from edge_agent.config import ModbusSourceConfig
from edge_agent.sources.modbus import ModbusConcentrator


class SwallowingClient:
    connected = True

    async def read_holding_registers(self, _address, *, count, **_unit):
        task = asyncio.current_task()
        task.cancel()
        # The cancellation arrives at this await and is lost, as in wait_for's race.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)
        return SimpleNamespace(registers=[0] * count, isError=lambda: False)


def test_a_read_that_swallowed_the_cancellation_raises_it():
    source = ModbusConcentrator(ModbusSourceConfig(name="c", host="127.0.0.1"))
    source._client = SwallowingClient()

    async def read() -> list[int]:
        return await source._read(0, 4)

    async def main() -> None:
        task = asyncio.create_task(read())
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(main())
