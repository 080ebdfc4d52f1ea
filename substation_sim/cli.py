"""``substation-sim``: run a simulated substation for the edge agent to read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import click

from substation_sim.concentrator import Concentrator
from substation_sim.register_map import INTERVAL_SECONDS, MAX_METERS
from substation_sim.runner import SimulatorRunner


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Simulated substation: meter concentrators served over Modbus TCP."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5020, show_default=True, help="Modbus TCP port.")
@click.option(
    "--meters",
    type=click.IntRange(1, MAX_METERS),
    default=1000,
    show_default=True,
    help="Meters per concentrator.",
)
@click.option(
    "--concentrators",
    type=click.IntRange(1, 247),
    default=1,
    show_default=True,
    help="Concentrators, served as unit ids 1..N on the one port.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=900.0,
    show_default=True,
    help="Simulated seconds per wall-clock second (900: one interval a second).",
)
@click.option(
    "--intervals",
    type=click.IntRange(min=1),
    default=None,
    help="Stop closing intervals after this many (and keep serving). Default: run forever.",
)
@click.option("--seed", default=1, show_default=True, help="Makes the field repeatable.")
@click.option(
    "--served",
    "served_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("served.sqlite"),
    show_default=True,
    help="SQLite file recording every reading served.",
)
@click.option(
    "--start",
    type=int,
    default=None,
    help="Simulated start, Unix seconds (rounded down to 15 min). Default: now, rounded down.",
)
def run(  # noqa: PLR0913 - one parameter per CLI option
    *,
    host: str,
    port: int,
    meters: int,
    concentrators: int,
    speed: float,
    intervals: int | None,
    seed: int,
    served_path: Path,
    start: int | None,
) -> None:
    """Serve concentrators and close 15-minute intervals as simulated time passes.

    Example: substation-sim run --meters 1000 --speed 900 --intervals 4 --port 5020
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    start_time = int(time.time()) if start is None else start
    start_time -= start_time % INTERVAL_SECONDS
    devices = [
        Concentrator(unit_id=unit, meter_count=meters, seed=seed, device=f"{host}:{port}/{unit}")
        for unit in range(1, concentrators + 1)
    ]

    async def serve() -> None:
        runner = SimulatorRunner(
            concentrators=devices, host=host, port=port, served_path=served_path, start=start_time
        )
        async with runner:
            await runner.run_clock(speed=speed, intervals=intervals)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
