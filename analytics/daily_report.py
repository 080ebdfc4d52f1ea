"""The daily report: one UTC day of the grid and of the pipeline, as an HTML page with PNG charts.

For management and the regulator: consumption by region and its load curve against the
day-ahead forecast, technical losses per substation, data quality and completeness (read,
estimated, missing, quarantined), alerts, transformer hot spots, ageing and dissolved gases,
and ingest health (latency, refused batches). ``write`` reads the day's facts
(``analytics.daily_facts``), draws the charts (``analytics.report_charts``) and writes
``index.html`` beside them in the output folder, with a progress bar. The page names its
sources and what made it, so a figure can be traced back to a view.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import psycopg

from analytics import daily_facts, report_charts
from analytics.daily_facts import Day
from proto.progress import Progress
from proto.version import __version__

log = logging.getLogger(__name__)
PAGE = "index.html"
SOURCES = (
    "region_hourly",
    "load_forecasts",
    "substation_day_losses",
    "region_day_completeness",
    "region_day_quality",
    "reading_quarantine",
    "quality_alerts",
    "transformer_health",
    "transformer_assets",
    "batches",
    "batch_refusals",
    "agents",
)
Format = Callable[[Any], str]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


def _shown(formatter: Callable[[Any], str]) -> Format:
    """``formatter`` for present values, a dash for absent ones."""
    return lambda value: "-" if _missing(value) else formatter(value)


KWH = _shown(lambda v: f"{v:,.1f}")
COUNT = _shown(lambda v: f"{int(v):,}")
SHARE = _shown(lambda v: f"{v:.2%}")


def _duration(seconds: float) -> str:
    """``0.8 s``, ``12.5 min``, ``3.2 h``, ``30.5 d``: a latency at a glance."""
    unit, size = report_charts.duration_unit(seconds)
    return f"{seconds / size:,.1f} {unit}"


DURATION = _shown(_duration)
CELSIUS = _shown(lambda v: f"{v:.1f}")
TEXT = _shown(str)
WHEN = _shown(lambda v: pd.Timestamp(v).tz_convert("UTC").strftime("%Y-%m-%d %H:%M"))
HOURS_OF_LIFE = _shown(lambda v: f"{v * 24:.2f}")


@dataclass(frozen=True, slots=True)
class Table:
    """A section's table as the page shows it: headers and formatted cells."""

    headers: list[str]
    rows: list[list[str]]


def table(frame: pd.DataFrame, columns: list[tuple[str, str, Format]]) -> Table:
    """``frame``'s ``columns`` (header, column, format), each cell formatted."""
    return Table(
        headers=[header for header, _, _ in columns],
        rows=[
            [shown(record[column]) for _, column, shown in columns]
            for record in frame.to_dict("records")
        ],
    )


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the page shows, read from the database."""

    curves: pd.DataFrame
    consumption: pd.DataFrame
    losses: pd.DataFrame
    quality: pd.DataFrame
    fleet: pd.DataFrame
    ingest: pd.DataFrame
    hourly_latency: pd.DataFrame
    committed: pd.DataFrame
    refusals: pd.DataFrame
    alerts: pd.DataFrame


def gather(conn: psycopg.Connection, day: Day, progress: Progress) -> Facts:
    """Read each section, advancing ``progress`` once per section."""
    curves = daily_facts.load_curves(conn, day)
    progress.advance()
    losses = daily_facts.losses(conn, day)
    progress.advance()
    quality = daily_facts.quality(conn, day)
    progress.advance()
    fleet = daily_facts.transformers(conn, day)
    progress.advance()
    committed = daily_facts.batches(conn, day)
    enrolled = daily_facts.enrolled_agents(conn, day)
    progress.advance()
    refused = daily_facts.refusals(conn, day)
    raised = daily_facts.quality_alerts(conn, day)
    progress.advance()
    return Facts(
        curves=curves,
        consumption=daily_facts.consumption(curves),
        losses=losses,
        quality=quality,
        fleet=fleet,
        ingest=daily_facts.ingest(committed, enrolled),
        hourly_latency=daily_facts.hourly_latency(committed, day),
        committed=committed,
        refusals=refused,
        alerts=daily_facts.alerts(
            day,
            quality_raised=raised,
            fleet=fleet,
            refused=refused,
            committed=committed,
            enrolled=enrolled,
        ),
    )


GATHER_STEPS = 6
CHARTS: dict[str, tuple[Callable[..., Path | None], str]] = {
    "load_curves": (report_charts.load_curves, "curves"),
    "losses": (report_charts.losses, "losses"),
    "quality": (report_charts.quality, "quality"),
    "transformers": (report_charts.transformers, "fleet"),
    "latency": (report_charts.latency, "hourly_latency"),
}


def draw(facts: Facts, out: Path, day: Day, progress: Progress) -> dict[str, str]:
    """Each chart's PNG in ``out``: its file name by section (absent: nothing to plot)."""
    drawn = {}
    for name, (chart, source) in CHARTS.items():
        path = chart(getattr(facts, source), out / f"{name}.png", day.date.isoformat())
        if path is not None:
            drawn[name] = path.name
        progress.advance()
    return drawn


def headline(facts: Facts) -> dict[str, str]:
    """The figures at the top of the page."""
    consumption, quality, committed = facts.consumption, facts.quality, facts.committed
    expected = quality["expected"].sum()
    feeder_heads = facts.losses.dropna(subset=["losses_share"])
    timed = committed["latency_s"].dropna()
    return {
        "Consumption, kWh": KWH(consumption["kwh"].sum(min_count=1)),
        "Forecast, kWh": KWH(consumption["forecast_kwh"].sum(min_count=1)),
        "Readings read": SHARE(quality["received"].sum() / expected if expected else None),
        "Estimated": SHARE(quality["estimated"].sum() / expected if expected else None),
        "Quarantined": COUNT(quality["quarantined"].sum()),
        "Technical losses": SHARE(
            feeder_heads["losses_kwh"].sum() / feeder_heads["feeder_head_kwh"].sum()
            if not feeder_heads.empty
            else None
        ),
        "Latency p95": DURATION(timed.quantile(0.95) if not timed.empty else None),
        "Agents with refused batches": COUNT(facts.refusals["agent_id"].nunique()),
        "Alerts": COUNT(len(facts.alerts)),
    }


def tables(facts: Facts) -> dict[str, Table]:
    """Each section's table."""
    return {
        "consumption": table(facts.consumption, [
            ("Region", "region", TEXT), ("kWh", "kwh", KWH),
            ("Forecast kWh", "forecast_kwh", KWH), ("Hourly MAPE", "mape", SHARE),
            ("Hours reported", "hours", COUNT),
        ]),
        "losses": table(facts.losses, [
            ("Substation", "substation", TEXT), ("Region", "region", TEXT),
            ("Feeder head kWh", "feeder_head_kwh", KWH), ("Customers kWh", "customer_kwh", KWH),
            ("Losses kWh", "losses_kwh", KWH), ("Losses", "losses_share", SHARE),
            ("Feeder head complete", "feeder_head_completeness", SHARE),
            ("Customers complete", "customer_completeness", SHARE),
        ]),
        "quality": table(facts.quality, [
            ("Region", "region", TEXT), ("Meters", "meters", COUNT),
            ("Expected", "expected", COUNT), ("Read", "received", COUNT),
            ("Estimated", "estimated", COUNT), ("Missing", "missing", COUNT),
            ("Suspect", "suspect", COUNT), ("Quarantined", "quarantined", COUNT),
            ("Completeness", "completeness", SHARE), ("Estimated share", "estimated_share", SHARE),
            ("Quarantined share", "quarantined_share", SHARE),
        ]),
        "alerts": table(facts.alerts, [
            ("What", "what", TEXT), ("Where", "where", TEXT), ("Since (UTC)", "since", WHEN),
            ("Detail", "detail", TEXT),
        ]),
        "transformers": table(facts.fleet, [
            ("Transformer", "transformer_id", TEXT), ("Substation", "substation", TEXT),
            ("Hot spot max °C", "hot_spot_max_c", CELSIUS),
            ("Limit °C", "hot_spot_limit_c", CELSIUS), ("Top oil max °C", "top_oil_max_c", CELSIUS),
            ("Min over hot-spot limit", "minutes_over_hot_spot_limit", COUNT),
            ("Min over top-oil limit", "minutes_over_top_oil_limit", COUNT),
            ("Life used today, h", "ageing_days", HOURS_OF_LIFE),
            ("Life used to date, h", "life_used_days", HOURS_OF_LIFE),
            ("IEC 60599", "iec_fault", TEXT), ("Duval", "duval_zone", TEXT),
            ("Gas alarm since", "gas_alarm_at", WHEN),
        ]),
        "ingest": table(facts.ingest, [
            ("Region", "region", TEXT), ("Agents", "agents", COUNT),
            ("Heard from", "agents_heard", COUNT), ("Batches", "batches", COUNT),
            ("Readings", "readings", COUNT), ("Latency p50", "latency_p50_s", DURATION),
            ("p95", "latency_p95_s", DURATION), ("p99", "latency_p99_s", DURATION),
        ]),
        "refusals": table(facts.refusals, [
            ("Agent", "agent_id", TEXT), ("Region", "region", TEXT), ("Reason", "reason", TEXT),
            ("Refusals", "refusals", COUNT), ("First (UTC)", "first_at", WHEN),
            ("Last (UTC)", "last_at", WHEN), ("Last detail", "last_detail", TEXT),
        ]),
    }  # fmt: skip


def render(facts: Facts, charts: dict[str, str], day: Day, made_by: str) -> str:
    """The page's HTML (every value escaped)."""
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = environment.from_string(
        files("analytics").joinpath("daily_report.html.j2").read_text(encoding="utf-8")
    )
    return template.render(
        day=day.date.isoformat(),
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        made_by=made_by,
        version=__version__,
        headline=headline(facts),
        tables=tables(facts),
        charts=charts,
        sources=SOURCES,
    )


def write(conn: psycopg.Connection, day: dt.date, out: Path) -> list[Path]:
    """Write the day's page and charts into ``out`` (created if need be); the files written.

    The session's time zone is set to UTC: every time on the page is UTC.
    """
    out.mkdir(parents=True, exist_ok=True)
    conn.execute("SET TIME ZONE 'UTC'")
    reported = Day(day)
    steps = GATHER_STEPS + len(CHARTS) + 1
    with Progress(f"daily report {day}", steps, unit="steps", log=log) as progress:
        facts = gather(conn, reported, progress)
        charts = draw(facts, out, reported, progress)
        login = conn.execute("SELECT session_user || '@' || current_database()").fetchone()
        page = out / PAGE
        page.write_text(render(facts, charts, reported, login[0] if login else ""), "utf-8")
        progress.advance()
    return [page, *(out / name for name in charts.values())]
