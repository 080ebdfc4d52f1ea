"""``analytics forecast predict|backtest`` on a database holding five weeks of rollups.

The rollups and the transformers' ambient temperatures are written as the core writes them
(``substation_hourly``, ``transformer_telemetry``), from the simulator's load of a region
(``tests/load_history.py``): five weeks through the pipeline would take an hour at speed 900.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fix_db import operator_dsn
from fix_services import BIN
from load_history import hourly_load, scenario

from core_ingest import agents
from core_ingest.schema import TIMESCALEDB
from proto import public_key_bytes

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
DAYS = 36  # the backtest's first day needs three weeks, then two weeks of its own forecasts
FORECAST_DAY = dt.date(2026, 10, 12)  # the scenario starts on Monday 2026-09-07


def _analytics(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "analytics"), *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def rollups(storage_dsn: str) -> dict:
    """Five weeks of a substation's hourly energy and the region's ambient temperature."""
    load, ambient = hourly_load(scenario(substations=1, meters=150), DAYS)
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        key = public_key_bytes(Ed25519PrivateKey.generate().public_key())
        agents.enroll(conn, "a", key, region="North")  # the region, and the sender of the values
        region_id = conn.execute("SELECT region_id FROM regions WHERE name = 'North'").fetchone()
        assert region_id is not None
        with conn.cursor().copy(
            "COPY substation_hourly (substation, region, hour, energy_wh, received, estimated,"
            " suspect) FROM STDIN"
        ) as copy:
            for name in load.columns:
                for hour, kwh in load[name].items():
                    copy.write_row((name, "North", hour, round(kwh * 1000), 1, 0, 0))
        with conn.cursor().copy(
            "COPY transformer_telemetry (transformer_id, time, metric, value, quality_flags,"
            " agent_id, batch_sequence, region_id) FROM STDIN"
        ) as copy:
            for hour, value in ambient.items():
                copy.write_row(("N-S01-T1", hour, "ambient_c", value, 0, "a", 1, region_id[0]))
    return {name: load[name] for name in load.columns}


def test_a_day_forecast_stored_with_its_band_and_lineage(rollups, storage_dsn):
    done = _analytics(
        "forecast", "predict", "--day", FORECAST_DAY.isoformat(), "--dsn", operator_dsn(storage_dsn)
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows"] == 2 * 24  # the substation and the region
    assert set(summary["kwh_by_series"]) == {"N-S01", "region:North"}
    with psycopg.connect(storage_dsn) as conn:
        rows = conn.execute(
            "SELECT series, count(*), min(hour), max(hour), bool_and(lower_kwh <= point_kwh"
            " AND point_kwh <= upper_kwh), min(model), min(training_to), min(computed_by)"
            " FROM load_forecasts GROUP BY series ORDER BY series"
        ).fetchall()
    start = dt.datetime.combine(FORECAST_DAY, dt.time(), dt.UTC)
    for series, count, first, last, banded, model, trained_to, by in rows:
        assert count == 24, series
        assert (first, last) == (start, start + dt.timedelta(hours=23))
        assert banded
        assert model == "HistGradientBoostingRegressor"
        assert trained_to == start  # nothing of the day itself was learned from
        assert by == "meterpipe_operator"
    region_total = summary["kwh_by_series"]["region:North"]
    actual = sum(float(s[str(FORECAST_DAY)].sum()) for s in rollups.values())
    assert abs(region_total - actual) / actual < 0.05  # a day-ahead forecast, not a guess


def test_a_backtest_of_past_days_and_too_little_history(rollups, storage_dsn):
    scored = _analytics(
        "forecast", "backtest", "--from", "2026-10-12", "--days", "1",
        "--dsn", operator_dsn(storage_dsn),
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    found = json.loads(scored.stdout)
    assert set(found) == {"N-S01", "region:North"}
    for figures in found.values():
        assert figures["days"] == 1
        assert figures["mape"] < figures["mape_seasonal_naive"]
    early = _analytics(
        "forecast", "predict", "--day", "2026-09-20", "--dsn", operator_dsn(storage_dsn)
    )
    assert early.returncode == 1
    assert "needs three weeks of hourly history" in early.stderr


def test_training_chooses_each_series_model_and_predict_uses_it(rollups, storage_dsn):
    operator = operator_dsn(storage_dsn)
    days = ("--from", "2026-10-12", "--days", "1")  # the backtest's first day with a band
    trained = _analytics("forecast", "train", *days, "--dsn", operator)
    assert trained.returncode == 0, trained.stderr
    chosen = json.loads(trained.stdout)
    assert set(chosen) == {"N-S01", "region:North"}
    scored = _analytics("forecast", "backtest", *days, "--dsn", operator)  # the same days
    assert scored.returncode == 0, scored.stderr
    backtested = json.loads(scored.stdout)
    with psycopg.connect(storage_dsn) as conn:
        recorded = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT series, model, mape, backtest_from, backtest_days, training_to,"
                " computed_by FROM forecast_models"
            ).fetchall()
        }
    for series, choice in chosen.items():
        model, mape, first, count, trained_to, by = recorded[series]
        # each candidate scored as the backtest scores it: the same fits of the same days
        assert mape["HistGradientBoostingRegressor"] == pytest.approx(
            backtested[series]["mape"], abs=1e-5
        )
        assert mape["RandomForestRegressor"] == pytest.approx(
            backtested[series]["mape_random_forest"], abs=1e-5
        )
        assert model == choice["model"] == min(mape, key=mape.get)  # the lower one chosen
        assert (first, count) == (dt.date(2026, 10, 12), 1)
        assert trained_to == dt.datetime(2026, 10, 13, tzinfo=dt.UTC)  # history read up to
        assert by == "meterpipe_operator"
    with psycopg.connect(storage_dsn, autocommit=True) as conn:  # a choice predict must follow
        conn.execute("UPDATE forecast_models SET model = 'RandomForestRegressor', mape ="
                     " mape || '{\"RandomForestRegressor\": 0}'")  # fmt: skip
    done = _analytics("forecast", "predict", "--day", FORECAST_DAY.isoformat(), "--dsn", operator)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(storage_dsn) as conn:
        models = conn.execute("SELECT DISTINCT model FROM load_forecasts").fetchall()
    assert models == [("RandomForestRegressor",)]
    with psycopg.connect(storage_dsn, autocommit=True) as conn:  # a model of another release
        conn.execute("UPDATE forecast_models SET model = 'Prophet', mape = '{\"Prophet\": 0}'")
    unknown = _analytics(
        "forecast", "predict", "--day", FORECAST_DAY.isoformat(), "--dsn", operator
    )
    assert unknown.returncode == 1
    assert "no model 'Prophet' in this release" in unknown.stderr
