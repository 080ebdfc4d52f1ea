"""The substation gateway agent: acquisition, pseudonymization, durable buffer, signed uplink.

Layers, bottom to top: ``sources`` read devices, ``transforms`` are pure (pseudonymize, batch
layout), ``sinks`` hold and send (buffer, uplink), ``agent`` wires them, ``cli`` is the command.
"""

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig, load_config
from edge_agent.errors import (
    BufferUnavailable,
    ConfigError,
    EdgeError,
    KeyFileError,
    MalformedReply,
    SourceError,
    UplinkBroken,
    UplinkError,
)
from proto.version import __version__  # one version for the release

__all__ = [
    "AgentConfig",
    "BufferUnavailable",
    "ConfigError",
    "EdgeAgent",
    "EdgeError",
    "KeyFileError",
    "MalformedReply",
    "SourceError",
    "UplinkBroken",
    "UplinkError",
    "__version__",
    "load_config",
]
