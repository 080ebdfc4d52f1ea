"""One poll's way from a device's records to the buffer: pseudonymize, validate, commit, adopt.

The agent, the edge benchmark and the tests share this step, so a benchmark measures what the
agent does. Checking is pure (event loop); the commit is one blocking buffer transaction (the
agent runs it in its I/O thread); what validation learned is adopted only after the commit
succeeded, so a failed commit leaves validation exactly where it was.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_agent.sinks.buffer import Buffer
from edge_agent.sources.register_map import MeterRecord
from edge_agent.transforms.pseudonymize import Pseudonymizer
from edge_agent.transforms.validate import MeterMemory, Validation, Validator


@dataclass(frozen=True, slots=True)
class CheckedPoll:
    """A poll pseudonymized and validated, and the buffer commit that keeps it."""

    validation: Validation
    commit: Callable[[], int]  # blocking; returns the readings newly buffered


class PollStep:
    """Turns polls of any device into buffer commits, remembering each meter in between."""

    def __init__(
        self,
        buffer: Buffer,
        pseudonymizer: Pseudonymizer,
        validator: Validator,
        memory: MeterMemory,
        device_meters: dict[str, set[bytes]] | None = None,
    ) -> None:
        """The step over ``buffer``; ``memory`` and ``device_meters`` as the buffer holds them."""
        self.buffer = buffer
        self.pseudonymizer = pseudonymizer
        self.validator = validator
        self.memory = memory
        self._device_meters = device_meters if device_meters is not None else {}

    def check(
        self, records: Sequence[MeterRecord], *, device: str, interval_end: int, poll_time_ms: int
    ) -> CheckedPoll:
        """Pseudonymize and validate one poll; nothing is written or remembered yet.

        The commit stores the states of every meter the device ever served, not only this
        poll's: a meter missing from one poll keeps its state.
        """
        readings = [
            self.pseudonymizer.apply(record, poll_time_ms=poll_time_ms, device=device)
            for record in records
        ]
        checked = self.validator.validate(readings, self.memory)
        known = self._device_meters.setdefault(device, set())
        known.update(checked.states)
        states = self.memory.states
        commit = functools.partial(
            self.buffer.put_readings,
            checked.readings,
            states={m: checked.states.get(m) or states[m] for m in known},
            profiles=self.memory.day_start_profiles(checked),
            quarantined=checked.quarantined,
            device=device,
            interval_end=interval_end,
            late=checked.late,
        )
        return CheckedPoll(checked, commit)

    def adopt(self, checked: CheckedPoll) -> None:
        """What validation learned, once the commit succeeded."""
        self.memory.adopt(checked.validation)
