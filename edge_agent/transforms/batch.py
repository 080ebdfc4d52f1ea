"""Lay buffered readings out as a columnar BatchPayload (pure, no I/O)."""

from __future__ import annotations

from edge_agent.transforms.pseudonymize import PseudonymousReading
from proto import pb


def meter_payload(readings: list[PseudonymousReading]) -> pb.BatchPayload:
    """Columns for the readings, with meters and devices each listed once and indexed."""
    meters: dict[bytes, int] = {}
    devices: dict[str, int] = {}
    columns = pb.MeterReadings()
    meter_index = [meters.setdefault(r.meter, len(meters)) for r in readings]
    device_index = [devices.setdefault(r.device, len(devices)) for r in readings]
    columns.meters.extend(meters)
    columns.meter_index.extend(meter_index)
    columns.interval_end.extend(r.interval_end for r in readings)
    columns.energy_wh.extend(r.energy_wh for r in readings)
    columns.register_wh.extend(r.register_wh for r in readings)
    columns.quality_flags.extend(r.quality_flags for r in readings)
    columns.poll_time_ms.extend(r.poll_time_ms for r in readings)
    columns.device_index.extend(device_index)
    return pb.BatchPayload(meter_readings=columns, devices=list(devices))
