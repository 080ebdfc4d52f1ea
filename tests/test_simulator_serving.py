"""The simulator over real Modbus TCP and a real Mosquitto broker: history, faults, telemetry."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket

import aiomqtt
import pytest
from pymodbus.client import AsyncModbusTcpClient

from edge_agent.sources import register_map as client_map
from substation_sim.telemetry import PAYLOAD_SCHEMA

pytestmark = pytest.mark.integration


async def read_history(port: int, selected: int, meters: int) -> tuple[list[int], list]:
    """Select an interval, then read the history header and table from the input registers."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3)
    await client.connect()
    try:
        await client.write_registers(10, [selected >> 16, selected & 0xFFFF], device_id=1)
        header = (await client.read_input_registers(0, count=8, device_id=1)).registers
        words = []
        for address, count in client_map.record_reads(meters):
            words += (
                await client.read_input_registers(address, count=count, device_id=1)
            ).registers
        return header, client_map.decode_meter_table(words, device="d")
    finally:
        client.close()


def test_history_returns_exactly_what_was_served(simulator):
    """Recent intervals read back as served, missed meters absent; older ones are gone."""
    faults = ({"kind": "missing", "start_hour": 0, "hours": 2, "share": 0.05},)
    sim = simulator(meters=300, faults=faults)
    ends = [sim.close_interval() for _ in range(4)]
    served = sim.served()
    for end in ends:
        header, records = asyncio.run(read_history(sim.port, end, 300))
        assert (header[2] << 16 | header[3], header[5]) == (end, 0)  # echo, status OK
        expected = {(r.serial, r.energy_wh, r.register_wh) for r in served if r.interval_end == end}
        assert {(r.serial, r.energy_wh, r.register_wh) for r in records} == expected
        assert 0 < len(expected) < 300  # some meters missed each interval
    header, records = asyncio.run(read_history(sim.port, ends[0] - 900, 300))
    assert header[5] == 1  # not held
    assert records == []


def test_exception_replies_are_served_and_recorded(simulator):
    """A modbus_exception fault answers requests with an exception, each one in the truth."""
    faults = ({"kind": "modbus_exception", "start_hour": 0, "hours": 10, "share": 1.0},)
    sim = simulator(meters=10, faults=faults)

    async def read() -> bool:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=3)
        await client.connect()
        try:
            return (await client.read_holding_registers(0, count=8, device_id=1)).isError()
        finally:
            client.close()

    assert all(asyncio.run(read()) for _ in range(3))
    sim.close_interval()  # drains the request faults into the record
    rows = [t for t in sim.record.truth() if t.kind == "modbus_exception"]
    assert len(rows) == 3
    assert {(r.detail, r.device) for r in rows} == {("exception", sim.device)}


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_offline_window_takes_the_device_off_the_network_and_brings_it_back(simulator):
    """Inside the window the port refuses connections; after it the device answers again."""
    faults = (
        {"kind": "offline", "start_hour": 0.5, "hours": 1, "substation": 0, "region": "North"},
    )
    sim = simulator(meters=10, faults=faults)
    sim.run_clock(speed=90_000, intervals=4)  # to 01:00, inside the window
    assert not accepts(sim.port)
    sim.run_clock(speed=90_000, intervals=4)  # to 02:00, after it
    assert accepts(sim.port)
    (row,) = [t for t in sim.record.truth() if t.kind == "offline"]
    assert (row.device, row.end - row.start) == (sim.device, 3600)


def collect_while_running(sim, broker_port: int) -> list[bytes]:
    """Run the simulator's clock for an hour while a subscriber collects every message."""
    received: list[bytes] = []

    async def scenario() -> None:
        ready = asyncio.Event()

        async def listen() -> None:
            async with aiomqtt.Client("127.0.0.1", port=broker_port) as client:
                await client.subscribe("grid/#", qos=1)
                ready.set()
                async for message in client.messages:
                    received.append(message.payload)  # noqa: PERF401 - runs until cancelled

        listener = asyncio.create_task(listen())
        await ready.wait()
        await asyncio.to_thread(lambda: sim.run_clock(speed=36_000, intervals=4))
        await asyncio.sleep(1.0)
        listener.cancel()

    asyncio.run(scenario())
    return received


def times_in_arrival_order(received: list[bytes]) -> list[str]:
    """The ``time`` of each message that has one, in arrival order."""
    order = []
    for payload in received:
        try:
            order.append(json.loads(payload)["time"])
        except (ValueError, KeyError):
            continue
    return order


def iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_telemetry_reaches_the_broker_as_recorded_with_its_faults(simulator, mosquitto):
    """All recorded messages arrive: duplicates twice, malformed broken, late ones late."""
    faults = (
        {"kind": "duplicate", "start_hour": 0, "hours": 1, "share": 0.2},
        {"kind": "malformed", "start_hour": 0, "hours": 1, "share": 0.2},
        {"kind": "out_of_order", "start_hour": 0, "hours": 1, "share": 0.1},
    )
    sim = simulator(meters=50, faults=faults, mqtt_port=mosquitto)
    received = collect_while_running(sim, mosquitto)
    recorded = [row[0] for row in sim.record._db.execute("SELECT payload FROM telemetry")]
    assert sorted(received) == sorted(recorded)
    truth = sim.record.truth()
    assert {t.kind for t in truth} == {"duplicate", "malformed", "out_of_order"}
    well_formed = [
        p
        for p in set(received)
        if b'"schema":"' + PAYLOAD_SCHEMA.encode() in p
        and b'"top_oil_c":' in p
        and b'"top_oil_c":"' not in p
        and b'"time"' in p
    ]
    assert len(well_formed) >= 60 - sum(t.kind == "malformed" for t in truth)
    numbered = [p for p in received if b'"seq"' in p]  # one malformed variant repeats itself
    assert len(numbered) - len(set(numbered)) == sum(t.kind == "duplicate" for t in truth)
    order = times_in_arrival_order(received)
    late = [t for t in truth if t.kind == "out_of_order"]
    assert late
    for row in late:
        held, following = iso(row.start), iso(row.start + 60)
        if held in order and following in order:
            assert order.index(held) > order.index(following)
