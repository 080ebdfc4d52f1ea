"""The agent's loops are supervised: an unexpected error restarts one loop, not the agent."""

from __future__ import annotations

import asyncio
import collections

import pytest

from edge_agent import agent as agent_module
from edge_agent.agent import EdgeAgent


def test_a_loop_that_fails_is_logged_counted_and_restarted(monkeypatch, caplog):
    """A loop raising an unexpected error runs again after the pause; nothing else stops."""
    monkeypatch.setattr(agent_module, "RESTART_SECONDS", 0)
    runs = []
    third_run = asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("device sent nonsense")
        third_run.set()
        await asyncio.Event().wait()

    holder = EdgeAgent.__new__(EdgeAgent)  # only the supervisor is exercised: no keys, no files
    holder.stage_errors = collections.Counter()

    async def scenario() -> None:
        task = asyncio.create_task(holder._supervised("poll[c1]", flaky))
        async with asyncio.timeout(10):
            await third_run.wait()
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert holder.stage_errors["poll[c1]"] == 2
    assert "poll[c1] failed unexpectedly" in caplog.text
    assert "device sent nonsense" in caplog.text
