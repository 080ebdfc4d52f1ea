"""Switch the edge to a new pseudonymization key without breaking any meter's central history.

The agent must be stopped. Every concentrator is read once to learn its meters' serials (the
only place they exist); each serial gives its old and new pseudonym; the buffer is re-keyed and
the old -> new mapping travels to the core in the next signed batch, where it joins the two.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from edge_agent.config import AgentConfig
from edge_agent.errors import ConfigError
from edge_agent.keys import load_pseudonym_key
from edge_agent.sinks.buffer import Buffer
from edge_agent.sources.modbus import ModbusConcentrator
from edge_agent.transforms.pseudonymize import Pseudonymizer
from proto.progress import Progress

log = logging.getLogger(__name__)


async def read_serials(config: AgentConfig) -> set[int]:
    """The serials of every meter behind every configured concentrator (live tables).

    Raises:
        SourceError: a concentrator could not be read: rotate when all are reachable.

    """
    serials: set[int] = set()
    devices = config.sources.modbus
    with Progress("reading every concentrator", len(devices), unit="devices", log=log) as read:
        for source_config in devices:
            source = ModbusConcentrator(source_config)
            try:
                header = await source.read_header()
                records = await source.read_table(
                    header.meter_count, history=False, latest=header.last_interval_end
                )
            finally:
                source.close()
            serials.update(record.serial for record in records)
            read.advance()
    return serials


def rotate_pseudonym_key(config: AgentConfig, *, new_key_file: Path, new_key_id: str) -> int:
    """Re-key the buffer from the configured key to the new one; return the meters mapped.

    Raises:
        ConfigError: the new key id is the old one, or the buffer is under another key.
        KeyFileError: a key file is missing, malformed or readable by others.
        SourceError: a concentrator could not be read.

    """
    if new_key_id == config.pseudonymization.key_id:
        raise ConfigError("--new-key-id", f"is the current key id {new_key_id!r}")
    keys = config.pseudonymization
    old = Pseudonymizer(key=load_pseudonym_key(keys.key_file), key_id=keys.key_id)
    new = Pseudonymizer(key=load_pseudonym_key(new_key_file), key_id=new_key_id)
    serials = asyncio.run(read_serials(config))
    buffer = Buffer(config.buffer.path, synchronous=config.buffer.synchronous)
    try:
        current = buffer.pseudonym_key_id()
        if current not in (None, old.key_id):
            raise ConfigError(
                "pseudonymization.key_id", f"is {old.key_id!r} but the buffer is under {current!r}"
            )
        with Progress("pseudonyms under both keys", len(serials), unit="meters", log=log) as made:
            mapping = {}
            for serial in serials:
                mapping[old.pseudonym(serial)] = new.pseudonym(serial)
                made.advance()
        log.info("re-keying the buffer: %d meters", len(mapping))
        return buffer.rotate_pseudonyms(mapping, old_key_id=old.key_id, new_key_id=new_key_id)
    finally:
        buffer.close()
