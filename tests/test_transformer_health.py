"""Transformer health from telemetry the pipeline stored: simulator -> MQTT -> agent -> core.

Two simulated hours of one transformer's telemetry reach the database; the registry is loaded
from the simulator's asset file; ``analytics health run`` computes the day as an operations
login. Each figure is checked against the stored telemetry, read independently (SQL
aggregates, the library's own ageing on the stored hot spots).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading

import pandas as pd
import psycopg
import pytest
from fix_db import operator_dsn
from fix_services import BIN, mqtt_section, stop_process, wait_until
from transformer_thermal_model.aging import days_aged
from transformer_thermal_model.transformer import PaperInsulationType

from analytics.dga import iec_ratio_fault
from analytics.health import MODEL
from core_ingest.schema import TIMESCALEDB
from proto.version import __version__

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
DAY = dt.date(2026, 11, 2)  # the test scenario's first day


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, check=False
    )


def _stored_messages(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM transformer_telemetry WHERE metric = 'hot_spot_c'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_day_of_health_from_stored_telemetry(  # noqa: PLR0913, PLR0917 - fixtures
    simulator, mosquitto, agent_setup, core_server, storage_dsn, tmp_path
):
    sim = simulator(meters=5, mqtt_port=mosquitto)
    extra = mqtt_section(mosquitto, "N-S01-T1")
    agent = agent_setup(core=core_server, modbus_port=sim.port, extra=extra)
    process = agent.run()
    try:
        agent.wait_subscribed()
        clock = threading.Thread(target=lambda: sim.run_clock(speed=900, intervals=8))
        clock.start()
        clock.join(timeout=120)
        wait_until(
            lambda: _stored_messages(storage_dsn) >= 120, timeout=60, what="2 h of telemetry"
        )
    finally:
        stop_process(process)

    assets = tmp_path / "assets.csv"
    (transformer,) = [t for s in sim.field.substations for t in s.transformers]
    assets.write_text(
        "transformer_id,substation,region,rated_kva,cooling,insulation,hot_spot_limit_c\n"
        f"{transformer.name},{transformer.substation},{transformer.region},"
        f"{transformer.rated_kva},ONAN,normal,30\n"  # a low limit: the minutes above it count
    )
    operator = operator_dsn(storage_dsn)
    loaded = _run("analytics", "assets", "load", str(assets), "--dsn", operator)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == {"loaded": 1}
    ran = _run("analytics", "health", "run", "--day", DAY.isoformat(), "--dsn", operator)
    assert ran.returncode == 0, ran.stderr
    (shown,) = json.loads(ran.stdout)
    assert shown["transformer_id"] == "N-S01-T1"

    with psycopg.connect(storage_dsn) as conn:
        row = conn.execute(
            "SELECT samples, hot_spot_max_c, top_oil_max_c, minutes_over_hot_spot_limit,"
            " ageing_days, gases_ppm, iec_fault, model, model_version, input_from, input_to,"
            " computed_by FROM transformer_health WHERE transformer_id = 'N-S01-T1'"
            " AND day = %s",
            (DAY,),
        ).fetchone()
        figures = conn.execute(
            "SELECT count(*), max(value) FILTER (WHERE metric = 'hot_spot_c'),"
            " (SELECT max(value) FROM transformer_telemetry WHERE metric = 'top_oil_c'),"
            " count(*) FILTER (WHERE value > 30)"
            " FROM transformer_telemetry WHERE metric = 'hot_spot_c'"
        ).fetchone()
        hot_spots = conn.execute(
            "SELECT time, value FROM transformer_telemetry WHERE metric = 'hot_spot_c'"
            " ORDER BY time"
        ).fetchall()
        last_gases = dict(
            conn.execute(
                "SELECT DISTINCT ON (metric) upper(replace(metric, '_ppm', '')), value"
                " FROM transformer_telemetry WHERE metric LIKE '%%_ppm'"
                " ORDER BY metric, time DESC"
            ).fetchall()
        )
        life = conn.execute(
            "SELECT days_recorded, life_used_days FROM transformer_life"
            " WHERE transformer_id = 'N-S01-T1'"
        ).fetchone()
    assert row is not None
    samples, hot_max, top_max, minutes_over, aged, gases, iec, model, version, start, end, by = row
    assert (samples, hot_max, top_max) == (figures[0], figures[1], figures[2])
    assert minutes_over == figures[3]  # one message a simulated minute
    series = pd.Series([v for _, v in hot_spots], index=pd.DatetimeIndex([t for t, _ in hot_spots]))
    assert aged == pytest.approx(days_aged(series, PaperInsulationType.NORMAL))
    assert gases == pytest.approx(last_gases)
    assert iec == iec_ratio_fault(last_gases)
    assert (model, version, by) == (MODEL, __version__, "meterpipe_operator")
    assert (start, end) == (
        dt.datetime(2026, 10, 26, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 3, tzinfo=dt.UTC),
    )
    assert life == (1, pytest.approx(aged))
    again = _run("analytics", "health", "run", "--day", DAY.isoformat(), "--dsn", operator)
    assert again.returncode == 0, again.stderr  # recomputed in place, not a second row


def test_the_simulators_asset_file_loads_and_a_bad_one_is_named(storage_dsn, tmp_path):
    made = _run("substation-sim", "assets", "national-slice")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0] == "transformer_id,substation,region,rated_kva,cooling,insulation"
    assert len(lines) == 1 + 8  # national-slice: one transformer in each of 8 substations
    path = tmp_path / "assets.csv"
    path.write_text(made.stdout)
    loaded = _run("analytics", "assets", "load", str(path), "--dsn", operator_dsn(storage_dsn))
    assert json.loads(loaded.stdout) == {"loaded": 8}
    path.write_text("transformer_id,substation,region,rated_kva\nT9,S9,North,\n")
    refused = _run("analytics", "assets", "load", str(path), "--dsn", operator_dsn(storage_dsn))
    assert refused.returncode == 1
    assert f"{path}:2: no value for rated_kva" in refused.stderr
