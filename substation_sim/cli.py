"""``substation-sim``: run a simulated substation field for edge agents to read."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from substation_sim import telemetry
from substation_sim.field import Field
from substation_sim.record import FieldRecord
from substation_sim.runner import SimulatorRunner
from substation_sim.scenario import Scenario, ScenarioError, load_scenario
from substation_sim.topology import build_topology

EXIT_CONFIG = 78


def _print(data: Any) -> None:  # noqa: ANN401 - any JSON-serializable value
    click.echo(json.dumps(data, indent=2, default=str))


def _scenario(source: str, **overrides: Any) -> Scenario:  # noqa: ANN401
    try:
        scenario = load_scenario(source)
    except ScenarioError as exc:
        click.echo(f"Error: invalid scenario: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    changes = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(scenario, **changes)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Simulated substations: concentrators over Modbus TCP, transformer sensors over MQTT.

    SCENARIO is a TOML file or the name of a shipped scenario: small, storm, outage,
    national-slice.
    """


@main.command()
@click.argument("scenario")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    help="Simulated seconds per wall-clock second (900: one interval a second).",
)
@click.option("--seed", type=int, help="Override the scenario's seed.")
@click.option(
    "--intervals",
    type=click.IntRange(min=1),
    help="Stop after this many intervals (devices keep serving). Default: run on.",
)
@click.option(
    "--record",
    "record_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("field-record.sqlite"),
    show_default=True,
    help="SQLite file for what was served and the ground truth of injected faults.",
)
@click.option("--host", help="Override the address the Modbus devices listen on.")
@click.option(
    "--base-port",
    type=click.IntRange(1, 65_535),
    help="Override modbus.base_port, the first device's port.",
)
@click.option(
    "--mqtt-port",
    type=click.IntRange(1, 65_535),
    help="Override mqtt.port, the broker transformer telemetry goes to.",
)
def run(  # noqa: PLR0913 - one parameter per CLI option
    *,
    scenario: str,
    speed: float | None,
    seed: int | None,
    intervals: int | None,
    record_path: Path,
    host: str | None,
    base_port: int | None,
    mqtt_port: int | None,
) -> None:
    """Serve a scenario's field and run its clock.

    Example: substation-sim run small --speed 900 --intervals 8 --record run.sqlite
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    chosen = _scenario(scenario, speed=speed, seed=seed)
    record = FieldRecord(record_path)

    async def serve() -> None:
        field = Field(chosen, record=record)
        async with SimulatorRunner(
            field, host=host, base_port=base_port, mqtt_port=mqtt_port
        ) as sim:
            await sim.run_clock(speed=chosen.speed, intervals=intervals)
            await asyncio.Event().wait()  # keep serving the final state until interrupted

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    except OSError as exc:
        raise click.ClickException(f"cannot serve: {exc}") from None
    finally:
        record.close()


@main.command()
@click.argument("scenario")
def describe(scenario: str) -> None:
    """List what a scenario serves and where: devices, ports, meters, transformers, topics.

    Example: substation-sim describe national-slice
    """
    chosen = _scenario(scenario)
    substations = build_topology(chosen)
    _print(
        {
            "scenario": chosen.name,
            "seed": chosen.seed,
            "start": chosen.start,
            "speed": chosen.speed,
            "meters": chosen.meters,
            "readings_per_wall_second": round(chosen.meters * chosen.speed / 900, 1),
            "history_intervals": chosen.history_intervals,
            "mqtt": (f"{chosen.mqtt_host}:{chosen.mqtt_port}" if chosen.mqtt_port else None),
            "substations": [
                {
                    "name": s.name,
                    "region": s.region,
                    "feeders": s.feeders,
                    "concentrators": [
                        {
                            "name": c.name,
                            "modbus": f"{chosen.host}:{c.port}",
                            "unit_id": 1,
                            "meters": len(c.meters),
                        }
                        for c in s.concentrators
                    ],
                    "feeder_head": {
                        "name": f"{s.name}-FH",
                        "modbus": f"{chosen.host}:{s.feeder_head_port}",
                        "serial": s.feeder_head_serial,
                    },
                    "transformers": [
                        {
                            "name": t.name,
                            "rated_kva": t.rated_kva,
                            "topic": telemetry.topic(chosen.topic_prefix, s.region, s.name, t.name),
                        }
                        for t in s.transformers
                    ],
                }
                for s in substations
            ],
            "faults": [dataclasses.asdict(f) for f in chosen.faults],
        }
    )


@main.command()
@click.argument("scenario")
def assets(scenario: str) -> None:
    """Print the scenario's transformers as an asset registry CSV (for `analytics assets load`).

    The simulator's transformers are oil-immersed ONAN units with normal Kraft paper, as its
    thermal model (IEC 60076-7, transformer-thermal-model's distribution transformer) runs them.

    Example: substation-sim assets national-slice > assets.csv
    """
    chosen = _scenario(scenario)
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["transformer_id", "substation", "region", "rated_kva", "cooling", "insulation"])
    for substation in build_topology(chosen):
        for t in substation.transformers:
            out.writerow([t.name, t.substation, t.region, t.rated_kva, "ONAN", "normal"])


@main.command()
@click.option(
    "--record",
    "record_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("field-record.sqlite"),
    show_default=True,
    help="The record file a run wrote.",
)
def truth(record_path: Path) -> None:
    """Summarize the injected faults a run recorded: kind, effect, device, count, time span.

    Example: substation-sim truth --record run.sqlite
    """
    record = FieldRecord(record_path)
    try:
        _print(record.truth_summary())
    finally:
        record.close()
