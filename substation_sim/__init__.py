"""A substation field to run on a laptop: concentrators over Modbus TCP, transformers over MQTT.

Imports nothing from the pipeline, so it tests the edge agent from outside, as a real field would.
Layout: ``scenario`` reads the TOML that describes a field, ``topology`` builds its devices,
``profiles`` and ``weather`` make the load, ``thermal`` the transformer physics, ``faults``
the injected errors, ``field`` steps it all, ``concentrator`` and ``telemetry`` are the devices'
faces, ``runner`` serves them and drives the clock, ``record`` keeps what was served and the
ground truth, ``cli`` is the ``substation-sim`` command.
"""

from substation_sim.concentrator import Concentrator
from substation_sim.field import Field
from substation_sim.record import FieldRecord, ServedReading, TruthRow
from substation_sim.runner import SimulatorRunner
from substation_sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario

__all__ = [
    "Concentrator",
    "Field",
    "FieldRecord",
    "Scenario",
    "ScenarioError",
    "ServedReading",
    "SimulatorRunner",
    "TruthRow",
    "load_scenario",
    "parse_scenario",
]
