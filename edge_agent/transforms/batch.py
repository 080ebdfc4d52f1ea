"""Lay buffered readings and telemetry out as a columnar BatchPayload (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping

from edge_agent.transforms.pseudonymize import PseudonymousReading
from edge_agent.transforms.telemetry import TelemetryPoint
from proto import pb


def _index(values: list, dictionary: dict) -> list[int]:
    """Each value's position in ``dictionary``, adding values not seen yet."""
    return [dictionary.setdefault(value, len(dictionary)) for value in values]


def batch_payload(
    readings: list[PseudonymousReading],
    points: list[TelemetryPoint] | None = None,
    rotations: list[tuple[str, str, list[tuple[bytes, bytes]]]] | None = None,
    roles: Mapping[str, str] | None = None,
) -> pb.BatchPayload:
    """Columns for both kinds of data; meters, devices, transformers, metrics listed once.

    ``roles`` names what each device's meters measure (``customer``, ``feeder_head``,
    ``transformer``); a device it does not name reads customers.
    """
    meters: dict[bytes, int] = {}
    devices: dict[str, int] = {}
    columns = pb.MeterReadings()
    meter_index = _index([r.meter for r in readings], meters)
    device_index = _index([r.device for r in readings], devices)
    columns.meters.extend(meters)
    columns.meter_index.extend(meter_index)
    columns.interval_end.extend(r.interval_end for r in readings)
    columns.energy_wh.extend(r.energy_wh for r in readings)
    columns.register_wh.extend(r.register_wh for r in readings)
    columns.quality_flags.extend(r.quality_flags for r in readings)
    columns.poll_time_ms.extend(r.poll_time_ms for r in readings)
    columns.device_index.extend(device_index)
    telemetry = pb.TransformerTelemetry()
    if points:
        transformers: dict[str, int] = {}
        metrics: dict[str, int] = {}
        telemetry.transformer_index.extend(_index([p.transformer for p in points], transformers))
        telemetry.metric_index.extend(_index([p.metric for p in points], metrics))
        telemetry.transformers.extend(transformers)
        telemetry.metrics.extend(metrics)
        telemetry.time_ms.extend(p.time_ms for p in points)
        telemetry.value.extend(p.value for p in points)
        telemetry.quality_flags.extend(p.quality_flags for p in points)
    payload = pb.BatchPayload(
        meter_readings=columns,
        transformer_telemetry=telemetry,
        devices=list(devices),
        device_roles=[
            pb.MeterRole.Value(f"METER_ROLE_{(roles or {}).get(d, 'customer').upper()}")
            for d in devices
        ],
    )
    for old_key_id, new_key_id, pairs in rotations or []:
        payload.rotations.add(
            old_key_id=old_key_id,
            new_key_id=new_key_id,
            old_meters=[old for old, _ in pairs],
            new_meters=[new for _, new in pairs],
        )
    return payload
