"""``analytics report daily`` on a database the pipeline filled: the page and charts hold the data.

Two simulated hours of a substation (40 customer meters, a feeder-head meter, a transformer
reporting over MQTT) go simulator -> agent -> core; ``analytics health run`` computes the
transformer's day; a hand-signed agent adds quarantined readings (an interval resent with
other values). The region's forecast is written as ``analytics forecast predict`` writes it
(predict needs three weeks of history: ``tests/test_load_forecasts.py`` runs it). The page's
figures are checked against the database read independently (raw readings and ledger rows,
not the views the report reads), and every chart's PNG for its series: named in its metadata,
drawn in its colour. A batch refused through the core (a wrong key) is reported on the day it
was refused.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fix_db import operator_dsn
from fix_services import BIN, mqtt_section, stop_process, wait_until
from PIL import Image
from signed_batches import FIRST_END, KEY, answer, payload, seal, send

from analytics import report_charts
from analytics.daily_report import DURATION
from core_ingest import agents
from core_ingest.schema import TIMESCALEDB
from proto import public_key_bytes

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
DAY = dt.date(2026, 11, 2)  # the test scenario's first day
METERS, INTERVALS = 40, 8
HAND_SIGNED = "agent-core-test"
CHARTS = ("load_curves", "losses", "quality", "transformers", "latency")


class Tables(HTMLParser):
    """The page's tables by id, as lists of rows of cell texts; and its images."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(str(found["id"]).removesuffix("-table"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(str(found["src"]))

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table is not None and self._cell is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, check=False
    )


def _records(table: list[list[str]]) -> list[dict[str, str]]:
    headers, *rows = table
    return [dict(zip(headers, row, strict=True)) for row in rows]


def _has_colour(png: Path, colour: str) -> bool:
    """Whether any pixel of ``png`` is ``colour`` (#rrggbb), give or take antialiasing."""
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    wanted = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(pixels - wanted).max(axis=1) <= 8).any())


def _stored(dsn: str, query: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def filled(  # noqa: PLR0913, PLR0917 - fixtures
    simulator, mosquitto, agent_setup, core_server, storage_dsn, tmp_path
) -> str:
    """The pipeline's two hours, the health job, a quarantine and a forecast.

    Returns the region, the pipeline agent's (the hand-signed agent joins its substation).
    """
    sim = simulator(meters=METERS, mqtt_port=mosquitto)
    feeder_head = (
        f'name = "feeder-head"\nhost = "127.0.0.1"\nport = {sim.port + 1}\nunit_id = 1\n'
        'poll_interval_seconds = 0.1\nrole = "feeder_head"'
    )
    extra = mqtt_section(mosquitto, "N-S01-T1")
    agent = agent_setup(
        core=core_server, modbus_port=sim.port, extra_sources=(feeder_head,), extra=extra
    )
    process = agent.run()
    try:
        agent.wait_subscribed()
        clock = threading.Thread(target=lambda: sim.run_clock(speed=900, intervals=INTERVALS))
        clock.start()
        clock.join(timeout=300)
        assert not clock.is_alive(), "the simulator's clock did not finish"
        wait_until(
            lambda: (
                _stored(storage_dsn, "SELECT count(*) FROM meter_readings")
                >= INTERVALS * (METERS + 1)
            ),
            timeout=90,
            what="the readings",
        )
        hot_spots = "SELECT count(*) FROM transformer_telemetry WHERE metric = 'hot_spot_c'"
        wait_until(  # one message a simulated minute
            lambda: _stored(storage_dsn, hot_spots) >= INTERVALS * 15,
            timeout=60,
            what="the transformer's telemetry",
        )
    finally:
        stop_process(process)

    with psycopg.connect(storage_dsn) as conn:
        substation, region = conn.execute(
            "SELECT substation, region FROM agents WHERE agent_id = %s", (agent.agent_id,)
        ).fetchone()
    assets = tmp_path / "assets.csv"
    assets.write_text(
        "transformer_id,substation,region,rated_kva,cooling,insulation,hot_spot_limit_c\n"
        f"N-S01-T1,{substation},{region},630,ONAN,normal,20\n"  # a low limit: an alert
    )
    operator = operator_dsn(storage_dsn)
    for args in (
        ("assets", "load", str(assets)),
        ("health", "run", "--day", DAY.isoformat()),
    ):
        done = _run("analytics", *args, "--dsn", operator)
        assert done.returncode == 0, done.stderr

    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        key = public_key_bytes(KEY.public_key())
        agents.enroll(conn, HAND_SIGNED, key, substation=substation, region=region)
        conn.execute(
            "INSERT INTO load_forecasts (series, region, hour, point_kwh, lower_kwh, upper_kwh,"
            " model, model_version, training_from, training_to) SELECT 'region:' || %s, %s,"
            " h, 1.5, 1.2, 1.8, 'RandomForestRegressor', 'test', %s - interval '35 days', %s"
            " FROM generate_series(%s, %s + interval '23 hours', interval '1 hour') h",
            (region, region, DAY, DAY, DAY, DAY),
        )
    midday = int(dt.datetime.combine(DAY, dt.time(12), dt.UTC).timestamp())
    interval = (midday - FIRST_END) // 900
    first, conflicting = (payload(meters=[1, 2], energy=e, interval=interval) for e in (100, 90))
    answers = send(core_server, seal(first, sequence=1), seal(conflicting, sequence=2))
    assert [answer(a) for a in answers] == ["ACK_STATUS_ACCEPTED", "ACK_STATUS_ACCEPTED"]
    return region


def _report(dsn: str, day: dt.date, out: Path) -> Tables:
    done = _run("analytics", "report", "daily", "--date", day.isoformat(), "--out", str(out),
                "--dsn", operator_dsn(dsn))  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["page"] == str(out / "index.html")
    page = Tables()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    assert "daily report" in done.stderr  # the progress, as log lines off a terminal
    return page


def test_the_days_page_and_charts_hold_what_the_database_holds(filled, storage_dsn, tmp_path):
    out = tmp_path / "report"
    page = _report(storage_dsn, DAY, out)
    assert sorted(page.images) == sorted(f"{name}.png" for name in CHARTS)
    with psycopg.connect(storage_dsn) as conn:
        start = dt.datetime.combine(DAY, dt.time(), dt.UTC)
        kwh, read, estimated = conn.execute(
            "SELECT sum(r.energy_wh) / 1000.0, count(*) FILTER (WHERE r.quality_flags & 2 = 0),"
            " count(*) FILTER (WHERE r.quality_flags & 2 <> 0) FROM meter_readings r"
            " JOIN meters m USING (meter_id) WHERE m.role = 'customer'"
            " AND r.interval_end > %s AND r.interval_end <= %s + interval '1 day'",
            (start, start),
        ).fetchone()
        customers = conn.execute("SELECT count(*) FROM meters WHERE role = 'customer'").fetchone()
        head_kwh = conn.execute(
            "SELECT sum(r.energy_wh) / 1000.0 FROM meter_readings r JOIN meters m"
            " USING (meter_id) WHERE m.role = 'feeder_head'"
        ).fetchone()[0]
        hot_spot = conn.execute(
            "SELECT max(value) FROM transformer_telemetry WHERE metric = 'hot_spot_c'"
        ).fetchone()[0]
        latencies = [
            float(v)
            for (v,) in conn.execute(
                "SELECT extract(epoch FROM committed_at - newest_interval_end) FROM batches"
                " WHERE newest_interval_end > %s AND newest_interval_end <= %s + interval '1 day'",
                (start, start),
            ).fetchall()
        ]

    (consumption,) = _records(page.tables["consumption"])
    assert consumption["Region"] == filled
    assert consumption["kWh"] == f"{kwh:,.1f}"
    assert consumption["Forecast kWh"] == f"{24 * 1.5:,.1f}"
    assert consumption["Hours reported"] == str(INTERVALS // 4 + 1)  # and the resent noon hour

    (quality,) = _records(page.tables["quality"])
    assert (quality["Meters"], quality["Expected"]) == (
        f"{customers[0]:,}",
        f"{96 * customers[0]:,}",
    )
    assert (quality["Read"], quality["Estimated"]) == (f"{read:,}", f"{estimated:,}")
    assert quality["Quarantined"] == "2"  # the two resent readings with other values

    (losses,) = _records(page.tables["losses"])
    assert losses["Feeder head kWh"] == f"{head_kwh:,.1f}"
    assert losses["Losses"] == f"{(head_kwh - kwh) / head_kwh:.2%}"  # customers as read

    (transformer,) = _records(page.tables["transformers"])
    assert transformer["Transformer"] == "N-S01-T1"
    assert transformer["Hot spot max °C"] == f"{hot_spot:.1f}"

    (ingest,) = _records(page.tables["ingest"])
    assert (ingest["Agents"], ingest["Heard from"]) == ("2", "2")
    assert ingest["Batches"] == f"{len(latencies):,}"
    assert ingest["p95"] == DURATION(np.quantile(latencies, 0.95))  # weeks: simulated in Nov

    alerts = {row["What"]: row for row in _records(page.tables["alerts"])}
    assert alerts["transformer: hot spot over its limit"]["Where"] == "N-S01-T1"

    series = {name: Image.open(out / f"{name}.png").text["Description"] for name in CHARTS}
    assert set(series["load_curves"].splitlines()) == {
        f"band {filled}", f"forecast {filled}", f"actual {filled}"
    }  # fmt: skip
    assert series["losses"].splitlines() == [f"losses {losses['Substation']}"]
    assert set(series["quality"].splitlines()) == {
        f"{part} {filled}" for part in ("read", "estimated", "missing", "quarantined")
    }
    assert set(series["transformers"].splitlines()) == {"hot spot N-S01-T1", "limit N-S01-T1"}
    assert set(series["latency"].splitlines()) == {"batches per hour", "latency p95 per hour"}
    colours = {
        "load_curves": (report_charts.ACTUAL, report_charts.FORECAST, report_charts.BAND),
        "losses": (report_charts.ACTUAL,),
        "quality": (report_charts.RECEIVED, report_charts.MISSING, report_charts.QUARANTINED),
        "transformers": (report_charts.ACTUAL, report_charts.LIMIT),
        "latency": (report_charts.MISSING, report_charts.FORECAST),
    }
    for name, drawn in colours.items():
        for colour in drawn:
            assert _has_colour(out / f"{name}.png", colour), (name, colour)


def test_a_day_without_readings_says_so_and_shows_its_refusals(core_server, storage_dsn, tmp_path):
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, HAND_SIGNED, public_key_bytes(KEY.public_key()))
    wrong_key = seal(payload(meters=[3]), sequence=3, key=Ed25519PrivateKey.generate())
    (refused,) = send(core_server, wrong_key)
    assert answer(refused) == "REJECT_REASON_BAD_SIGNATURE"
    wait_until(
        lambda: _stored(storage_dsn, "SELECT count(*) FROM batch_refusals") == 1,
        timeout=10,
        what="the refusal written",
    )
    with psycopg.connect(storage_dsn) as conn:
        (day,) = conn.execute(
            "SELECT (last_at AT TIME ZONE 'UTC')::date FROM batch_refusals"
        ).fetchone()  # the core's day, whatever the test's clock says by now
    out = tmp_path / "refused"
    page = _report(storage_dsn, day, out)
    assert page.images == []  # nothing to plot: no chart, the page says why
    text = (out / "index.html").read_text(encoding="utf-8")
    assert "No consumption reported for this day." in text
    assert "No substation with both feeder-head readings" in text
    (row,) = _records(page.tables["refusals"])
    assert (row["Agent"], row["Reason"], row["Refusals"]) == (
        HAND_SIGNED, "BAD_SIGNATURE", "1"
    )  # fmt: skip
    alerts = _records(page.tables["alerts"])
    assert {(a["What"], a["Where"]) for a in alerts} == {
        ("batches refused: BAD_SIGNATURE", HAND_SIGNED),
        ("agent: no meter readings of the day", HAND_SIGNED),
    }


def test_an_unwritable_folder_is_named(storage_dsn, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = _run("analytics", "report", "daily", "--date", DAY.isoformat(),
                "--out", str(blocker / "report"), "--dsn", operator_dsn(storage_dsn))  # fmt: skip
    assert done.returncode == 1
    assert f"cannot write the report into {blocker / 'report'}" in done.stderr
