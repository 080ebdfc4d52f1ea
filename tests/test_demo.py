"""The README's first command: the demo runs end to end and reports a complete store.

Run with ``--report``: the analytics over the stored intervals and the daily report too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
DEMO = Path(__file__).parent.parent / "scripts" / "demo.py"


def test_demo_stores_every_served_reading_and_shows_its_lineage(tmp_path):
    """Simulator -> agent -> core on throwaway services: all 4,000 readings, rolled up.

    The feeder head is polled too, kept out of the rollups, and gives the small scenario's
    configured 7 % of losses. The report of the day has every chart.
    """
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, str(DEMO), "--report", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout[done.stdout.index("{") : done.stdout.index("\n}\n") + 2])
    assert report["complete"] is True
    stored = report["stored"]
    assert (stored["readings"], stored["meters"], stored["intervals"]) == (4000, 1000, 4)
    assert stored["energy_wh_in_daily_rollups"] == report["served"]["energy_wh"]
    losses = report["losses"]
    assert losses["losses_share"] == pytest.approx(losses["configured_share"], abs=0.001)
    steps = [line.split(":")[0] for line in report["lineage_of_one_reading"]]
    assert steps == ["acquire", "validate", "pseudonymize", "sign", "transmit", "ingest"]
    trained = done.stdout[done.stdout.index("analytics forecast train:") :]
    assert '"model": "RandomForestRegressor"' in trained.split("analytics forecast predict:")[0]
    assert sorted(p.name for p in out.iterdir()) == [
        "index.html", "latency.png", "load_curves.png", "losses.png", "quality.png",
        "transformers.png",
    ]  # fmt: skip
