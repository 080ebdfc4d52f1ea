"""The README's first command: the demo runs end to end and reports a complete store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
DEMO = Path(__file__).parent.parent / "scripts" / "demo.py"


def test_demo_stores_every_served_reading_and_shows_its_lineage():
    """Simulator -> agent -> core on throwaway services: all 4,000 readings, rolled up.

    The feeder head is polled too, kept out of the rollups, and gives the small scenario's
    configured 7 % of losses.
    """
    done = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout[done.stdout.index("{") :])
    assert report["complete"] is True
    stored = report["stored"]
    assert (stored["readings"], stored["meters"], stored["intervals"]) == (4000, 1000, 4)
    assert stored["energy_wh_in_daily_rollups"] == report["served"]["energy_wh"]
    losses = report["losses"]
    assert losses["losses_share"] == pytest.approx(losses["configured_share"], abs=0.001)
    steps = [line.split(":")[0] for line in report["lineage_of_one_reading"]]
    assert steps == ["acquire", "validate", "pseudonymize", "sign", "transmit", "ingest"]
