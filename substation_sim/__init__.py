"""A substation you can run on a laptop: meter concentrators served over Modbus TCP.

Imports nothing from the pipeline, so it tests the edge agent from outside, as a real field would.
Layout: ``register_map`` encodes what a concentrator exposes, ``profiles`` makes the energy,
``concentrator`` holds the meters and serves them, ``served`` is the record kept for tests,
``runner`` drives the clock, ``cli`` is the ``substation-sim`` command.
"""

from substation_sim.concentrator import Concentrator
from substation_sim.runner import SimulatorRunner
from substation_sim.served import ServedLog, ServedReading

__all__ = ["Concentrator", "ServedLog", "ServedReading", "SimulatorRunner"]
