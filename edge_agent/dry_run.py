"""``edge-agent once``: one full cycle of the agent, nothing kept and nothing sent.

Each device is polled as the agent would poll it (missed intervals from its history first,
from where the buffer's cursor stands, then the live table), each poll pseudonymized and
validated against what the buffer remembers of each meter. The result is what would be
sealed; the buffer is opened read only (a fresh agent's is a throwaway in a temporary folder),
no cursor moves, and nothing goes to the core. A device that fails is reported and the others
are still read.

Run it with the agent stopped: both would write the same concentrator's history selector, and
the agent, which checks the history header of every read, would lose that poll (never store a
wrong value).
"""

from __future__ import annotations

import collections
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig
from edge_agent.errors import SourceError
from edge_agent.follow import flag_names
from edge_agent.keys import load_pseudonym_key
from edge_agent.poll_step import PollStep
from edge_agent.probe import DEFAULT_RECORDS
from edge_agent.sinks.buffer import Buffer
from edge_agent.sources.modbus import ModbusConcentrator
from edge_agent.transforms.pseudonymize import Pseudonymizer, PseudonymousReading
from edge_agent.transforms.validate import Validator
from proto.diagnosis import iso
from proto.quality import QualityFlag


@contextlib.contextmanager
def _buffer_for_reading(config: AgentConfig) -> Iterator[Buffer]:
    """The agent's buffer, read only; a new empty one in a temporary folder if none exists."""
    if config.buffer.path.exists():
        buffer = Buffer(config.buffer.path, read_only=True)
        try:
            yield buffer
        finally:
            buffer.close()
        return
    with tempfile.TemporaryDirectory(prefix="edge-agent-once-") as folder:
        buffer = Buffer(Path(folder) / "buffer.sqlite")
        try:
            yield buffer
        finally:
            buffer.close()


async def one_cycle(config: AgentConfig) -> dict[str, Any]:
    """Poll every device once and say what would be sealed, device by device."""
    keys = config.pseudonymization
    pseudonymizer = Pseudonymizer(key=load_pseudonym_key(keys.key_file), key_id=keys.key_id)
    with _buffer_for_reading(config) as buffer:
        cursors = buffer.device_cursors()
        step = PollStep(
            buffer,
            pseudonymizer,
            Validator(config.validation),
            buffer.meter_memory(),
            buffer.device_meters(),
        )
        devices = [
            await _device_cycle(
                step, ModbusConcentrator(source, delivered_up_to=cursors.get(source.device, 0))
            )
            for source in config.sources.modbus
        ]
    readings = sum(d["readings"] for d in devices)
    limit = config.uplink.batch_max_readings
    return {
        "agent_id": config.agent.id,
        "sent": False,
        "devices": devices,
        "would_seal": {"readings": readings, "batches": -(-readings // limit)},
    }


async def _device_cycle(step: PollStep, device: ModbusConcentrator) -> dict[str, Any]:
    """One device's polls: what each holds, by quality, and a few readings to look at."""
    outcome: dict[str, Any] = {"device": device.config.name, "intervals": [], "readings": 0}
    flags: collections.Counter[str] = collections.Counter()
    sample: list[dict[str, Any]] = []
    try:
        async for poll in device.poll():
            checked = step.check(
                poll.records,
                device=device.device,
                interval_end=poll.interval_end,
                poll_time_ms=poll.poll_time_ms,
            )
            step.adopt(checked)  # in memory only: the next interval is judged after this one
            device.delivered(poll)
            validation = checked.validation
            outcome["intervals"].append(
                {
                    "interval_end": iso(poll.interval_end * 1000),
                    "from_history": poll.from_history,
                    "readings": len(validation.readings),
                    "quarantined": len(validation.quarantined),
                }
            )
            outcome["readings"] += len(validation.readings)
            for reading in validation.readings:
                flags[flag_names(reading.quality_flags)] += 1
            sample += [_shown(r) for r in validation.readings[: DEFAULT_RECORDS - len(sample)]]
    except SourceError as exc:
        outcome["error"] = str(exc)
    finally:
        device.close()
    outcome["by_quality"] = dict(flags)
    outcome["sample"] = sample
    return outcome


def _shown(reading: PseudonymousReading) -> dict[str, Any]:
    return {
        "meter": reading.meter.hex()[:8],
        "interval_end": iso(reading.interval_end * 1000),
        "energy_wh": reading.energy_wh,
        "register_wh": reading.register_wh,
        "flags": flag_names(reading.quality_flags),
        "estimated": bool(reading.quality_flags & QualityFlag.ESTIMATED),
    }
