"""A stand-in for the agent's buffer work, to be killed mid-commit (tests/test_buffer_power_cut.py).

Usage: python tests/buffer_writer.py BUFFER METERS

Commits one poll of METERS readings per interval after the buffer's cursor (readings and
cursor in one commit, as the agent does), seals every other poll into batches and
acknowledges the oldest pending batch, for ever. Before each commit it prints
``committing <what> <n>`` and after it ``committed <what> <n>``, flushed, so the test can kill
it inside a commit and then check that what was reported committed is there.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge_agent.sinks.buffer import Buffer
from edge_agent.transforms.pseudonymize import PseudonymousReading

DEVICE = "conc-1"
INTERVAL = 900


def say(what: str) -> None:
    """One line for the test, at once."""
    print(what, flush=True)


def main() -> None:
    """Write until killed."""
    path, meters = Path(sys.argv[1]), int(sys.argv[2])
    buffer = Buffer(path)
    end = buffer.device_cursors().get(DEVICE, 0) + INTERVAL
    while True:
        poll = [
            PseudonymousReading(m.to_bytes(32, "big"), end, 100, end + m, 0, end * 1000, DEVICE)
            for m in range(meters)
        ]
        say(f"committing poll {end}")
        buffer.put_readings(poll, device=DEVICE, interval_end=end)
        say(f"committed poll {end}")
        if end // INTERVAL % 2 == 0:
            say("committing seal 0")
            batch = buffer.seal_batch(lambda *_: b"signed", max_readings=meters)
            say(f"committed seal {batch.sequence if batch else 0}")
            oldest = buffer.next_pending(newest=False)
            if oldest is not None:
                say(f"committing ack {oldest.sequence}")
                buffer.acknowledge(oldest.sequence, outcome="ACCEPTED", detail="", refused=False)
                say(f"committed ack {oldest.sequence}")
        end += INTERVAL


if __name__ == "__main__":
    main()
