"""What an agent buffered from a device model, held against what the device served.

Shared by the tests that drive an agent against ``doc_concentrator.DeviceModel``, served through
pymodbus (``test_poll_consistency``) or through a hostile wire (``test_fuzz_modbus_wire``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from doc_concentrator import DeviceModel

from edge_agent.keys import load_pseudonym_key
from edge_agent.transforms.pseudonymize import Pseudonymizer
from proto.quality import QualityFlag

ESTIMATED = int(QualityFlag.ESTIMATED)


def write_config(
    folder: Path, keys: Path, ports: list[int], *, timeouts: Sequence[float] = (), retries: int = 0
) -> Path:
    """An agent configuration reading one device on each of ``ports`` (``doc``, ``doc-1``...).

    Each device waits ``timeouts[i]`` seconds for a reply, 5 where none is given.
    """
    waits = [*timeouts, *[5.0] * len(ports)]
    devices = "".join(
        f'[[sources.modbus]]\nname = "doc{f"-{index}" if index else ""}"\nhost = "127.0.0.1"\n'
        f"port = {port}\nunit_id = 1\npoll_interval_seconds = 1\n"
        f"timeout_seconds = {waits[index]}\nretries = {retries}\n\n"
        for index, port in enumerate(ports)
    )
    path = folder / "edge-agent.toml"
    path.write_text(
        f'[agent]\nid = "prop-1"\nsigning_key_file = "{keys / "agent.key"}"\n\n'
        f'[pseudonymization]\nkey_file = "{keys / "pseudonym.key"}"\nkey_id = "k1"\n\n'
        f'[uplink]\ntarget = "127.0.0.1:1"\n\n{devices}'
    )
    return path


def buffered(buffer: Path, device: str | None = None) -> tuple[list[tuple], list[str]]:
    """The readings buffered (of ``device``, or all) and every quarantine reason."""
    with sqlite3.connect(buffer) as db:
        rows = db.execute(
            "SELECT meter, interval_end, energy_wh, register_wh, quality_flags FROM readings"
            " WHERE ? IS NULL OR device = ?",
            (device, device),
        ).fetchall()
        reasons = [r for (r,) in db.execute("SELECT reason FROM quarantine")]
    return rows, reasons


def check_against_device(rows: list[tuple], model: DeviceModel, keys: Path) -> None:
    """Values first (a torn record), then provenance (a needless estimate), then completeness."""
    pseudonyms = Pseudonymizer(key=load_pseudonym_key(keys / "pseudonym.key"), key_id="k1")
    serial_of = {pseudonyms.pseudonym(s): s for s in model.serials}
    served = {(s.serial, s.interval_end): s for s in model.served}
    stored: dict[tuple[int, int], tuple[int, int, int]] = {}
    for meter, end, energy, register, flags in rows:
        assert meter in serial_of, f"a reading of a meter the device does not have ({end})"
        key = (serial_of[meter], end)
        assert key not in stored, f"meter {key[0]} interval {end} buffered twice"
        stored[key] = (energy, register, flags)
    for key, (energy, register, flags) in stored.items():
        if not flags & ESTIMATED:
            assert key in served, f"meter {key[0]} interval {key[1]} was never served"
            expected = (served[key].energy_wh, served[key].register_wh)
            assert (energy, register) == expected, f"{served[key]} buffered as {energy, register}"
    for key, (_, _, flags) in stored.items():
        if flags & ESTIMATED:
            assert key in model.missed or key[1] in model.evicted, (
                f"meter {key[0]} interval {key[1]} estimated although the device held it"
            )
    for key, record in served.items():
        got = stored.get(key)
        if key[1] in model.evicted and (got is None or got[2] & ESTIMATED):
            continue  # dropped by the history before the agent could read it
        assert got is not None, f"served {record} was never buffered"
