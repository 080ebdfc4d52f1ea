"""``edge-agent tail``: every reading and telemetry value as it is sealed, with its flags.

Follows the buffer (read only, beside the running agent): each newly sealed batch is opened
with the agent's own public key, so what is shown is exactly what the core will receive, each
value once; quarantined items are shown as they arrive. Meters appear as the first 8 hex
digits of their pseudonym (the serial is never in the buffer).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.sinks.buffer import Buffer
from proto import open_batch, pb
from proto.quality import QualityFlag

PSEUDONYM_HEX_SHOWN = 8


def flag_names(flags: int) -> str:
    """``read`` when no rule objected, else the flags' names joined by ``|``."""
    if not flags:
        return "read"
    return "|".join(flag.name or str(int(flag)) for flag in QualityFlag(flags))


def _clock(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%H:%M:%S")


def _interval(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%m-%d %H:%M")


@dataclass
class Follower:
    """Where the tail stands: the last batch and quarantine row shown."""

    buffer: Buffer
    public_key: Ed25519PublicKey
    device_names: dict[str, str]  # device URL -> its [[sources.modbus]] name
    after_sequence: int
    after_quarantine: int

    def lines(self) -> Iterator[str]:
        """Lines for everything sealed or quarantined since the last call."""
        for batch in self.buffer.retained_batches(from_sequence=self.after_sequence + 1):
            self.after_sequence = batch.sequence
            opened = open_batch(pb.SignedBatch.FromString(batch.signed), self.public_key)
            yield from self._readings(opened.header, opened.payload)
        for item in self.buffer.quarantined_after(self.after_quarantine):
            self.after_quarantine = item["id"]
            yield (
                f"{_clock(item['received_ms'])} QUARANTINE {item['source']} {item['device']}:"
                f" {item['reason']}"
            )

    def _readings(self, header: pb.BatchHeader, payload: pb.BatchPayload) -> Iterator[str]:
        sealed = _clock(header.created_ms)
        devices = [self.device_names.get(d, d) for d in payload.devices]
        readings = payload.meter_readings
        for i, index in enumerate(readings.meter_index):
            yield (
                f"{sealed} #{header.sequence} {devices[readings.device_index[i]]}"
                f" {readings.meters[index].hex()[:PSEUDONYM_HEX_SHOWN]}"
                f" {_interval(readings.interval_end[i])} {readings.energy_wh[i]:>7} Wh"
                f" reg {readings.register_wh[i]:>11} Wh {flag_names(readings.quality_flags[i])}"
            )
        telemetry = payload.transformer_telemetry
        for i, index in enumerate(telemetry.transformer_index):
            yield (
                f"{sealed} #{header.sequence} {telemetry.transformers[index]}"
                f" {telemetry.metrics[telemetry.metric_index[i]]} {telemetry.value[i]:g}"
                f" at {_clock(telemetry.time_ms[i])} {flag_names(telemetry.quality_flags[i])}"
            )
