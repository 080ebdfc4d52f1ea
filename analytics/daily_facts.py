"""One UTC day's facts for the daily report, read from the rollups and ledgers, never the raw rows.

Each function reads one section as a table (a ``pandas.DataFrame``): consumption and its load
curve against the forecast, technical losses, data quality, alerts, transformers, ingest
health. They read what the core and the analytics jobs maintain (``region_hourly``,
``substation_day_losses``, ``region_day_completeness``, ``transformer_health``, the batch
ledger by agent), so a day's report costs the same on a year of readings as on a week. Row-level
security applies: a login scoped to a region reports on its region.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg

LATENCY_QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class Day:
    """The UTC day reported on: its date and its bounds."""

    date: dt.date

    @property
    def start(self) -> dt.datetime:
        """Midnight UTC that opens it."""
        return dt.datetime.combine(self.date, dt.time(), dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """Midnight UTC that closes it."""
        return self.start + dt.timedelta(days=1)


def _frame(
    conn: psycopg.Connection, query: str, params: Sequence[Any], columns: Sequence[str]
) -> pd.DataFrame:
    rows = conn.execute(query, params).fetchall()
    return pd.DataFrame(rows, columns=list(columns))


def load_curves(conn: psycopg.Connection, day: Day) -> pd.DataFrame:
    """Per region and hour: the customers' kWh, its estimated share, and the day-ahead forecast.

    The forecast columns are empty (NaN) where ``analytics forecast predict`` did not run.
    """
    actual = _frame(
        conn,
        "SELECT region, hour, energy_wh / 1000.0, received, estimated FROM region_hourly"
        " WHERE hour >= %s AND hour < %s",
        (day.start, day.end),
        ("region", "hour", "kwh", "received", "estimated"),
    )
    forecast = _frame(
        conn,
        "SELECT substr(series, 8), hour, point_kwh, lower_kwh, upper_kwh, model"
        " FROM load_forecasts WHERE series LIKE 'region:%%' AND hour >= %s AND hour < %s",
        (day.start, day.end),
        ("region", "hour", "forecast_kwh", "lower_kwh", "upper_kwh", "model"),
    )
    curves = actual.merge(forecast, on=["region", "hour"], how="outer")
    for column in ("kwh", "received", "estimated", "forecast_kwh", "lower_kwh", "upper_kwh"):
        curves[column] = curves[column].astype(float)
    return curves.sort_values(["region", "hour"], ignore_index=True)


def consumption(curves: pd.DataFrame) -> pd.DataFrame:
    """Per region: the day's kWh, the forecast's, and the forecast's hourly MAPE (where both)."""
    both = curves.dropna(subset=["kwh", "forecast_kwh"])
    error = (both["kwh"] - both["forecast_kwh"]).abs() / both["kwh"].where(both["kwh"] > 0)
    by_region = curves.groupby("region").agg(
        kwh=("kwh", lambda s: s.sum(min_count=1)),
        forecast_kwh=("forecast_kwh", lambda s: s.sum(min_count=1)),
        hours=("kwh", "count"),
    )
    by_region["mape"] = error.groupby(both["region"]).mean()
    return by_region.reset_index()


def losses(conn: psycopg.Connection, day: Day) -> pd.DataFrame:
    """Per substation: feeder-head and customer energy, the losses and their share."""
    return _frame(
        conn,
        "SELECT substation, region, feeder_head_wh / 1000.0, customer_wh / 1000.0,"
        " losses_wh / 1000.0, losses_share, feeder_head_completeness, customer_completeness"
        " FROM substation_day_losses WHERE day = %s ORDER BY losses_share DESC NULLS LAST",
        (day.start,),
        (
            "substation", "region", "feeder_head_kwh", "customer_kwh", "losses_kwh",
            "losses_share", "feeder_head_completeness", "customer_completeness",
        ),
    )  # fmt: skip


def quality(conn: psycopg.Connection, day: Day) -> pd.DataFrame:
    """Per region: expected, read, estimated, missing, suspect and quarantined readings."""
    completeness = _frame(
        conn,
        "SELECT c.region, c.meters, c.expected, c.received, c.estimated, c.missing,"
        " q.flagged FROM region_day_completeness c JOIN region_day_quality q"
        " ON q.region = c.region AND q.day = c.day WHERE c.day = %s",
        (day.start,),
        ("region", "meters", "expected", "received", "estimated", "missing", "suspect"),
    )
    quarantined = _frame(
        conn,
        "SELECT g.name, count(*) FROM reading_quarantine q JOIN regions g USING (region_id)"
        " WHERE q.interval_end > %s AND q.interval_end <= %s GROUP BY g.name",
        (day.start, day.end),
        ("region", "quarantined"),
    )
    table = completeness.merge(quarantined, on="region", how="outer").fillna(0)
    expected = table["expected"].astype(float).where(table["expected"] > 0)
    table["completeness"] = table["received"] / expected
    table["estimated_share"] = table["estimated"] / expected
    table["quarantined_share"] = table["quarantined"] / expected
    return table.sort_values("region", ignore_index=True)


def transformers(conn: psycopg.Connection, day: Day) -> pd.DataFrame:
    """Per registered transformer with a health record of the day: limits, ageing, gases."""
    return _frame(
        conn,
        "SELECT h.transformer_id, a.substation, h.region, h.hot_spot_max_c,"
        " a.hot_spot_limit_c, h.top_oil_max_c, a.top_oil_limit_c,"
        " h.minutes_over_hot_spot_limit, h.minutes_over_top_oil_limit, h.ageing_days,"
        " (SELECT sum(e.ageing_days) FROM transformer_health e"
        "   WHERE e.transformer_id = h.transformer_id AND e.day <= h.day),"
        " h.iec_fault, h.duval_zone, h.gas_alarm_at, h.gas_alarm_reasons"
        " FROM transformer_health h JOIN transformer_assets a USING (transformer_id)"
        " WHERE h.day = %s ORDER BY h.transformer_id",
        (day.date,),
        (
            "transformer_id", "substation", "region", "hot_spot_max_c", "hot_spot_limit_c",
            "top_oil_max_c", "top_oil_limit_c", "minutes_over_hot_spot_limit",
            "minutes_over_top_oil_limit", "ageing_days", "life_used_days", "iec_fault",
            "duval_zone", "gas_alarm_at", "gas_alarm_reasons",
        ),
    )  # fmt: skip


SPAN = dt.timedelta(days=7)  # the longest a batch's readings span (a backfill of history)


def batches(conn: psycopg.Connection, day: Day) -> pd.DataFrame:
    """Every batch carrying readings of the day: its agent, region, readings and latency (s).

    A batch carries the day's readings when its interval window overlaps the day, however late
    it was committed (an agent catching up after an outage counts, with its delay). Found
    through the ledger's index on the newest interval end (migration 19), within ``SPAN``
    after the day. ``readings`` is the batch's, which may hold other days' too. Latency is
    commit time minus the newest interval end. Batches of telemetry only have no window.
    """
    table = _frame(
        conn,
        "SELECT b.agent_id, a.region, b.newest_interval_end, b.meter_readings,"
        " extract(epoch FROM b.committed_at - b.newest_interval_end)::float8"
        " FROM batches b JOIN agents a USING (agent_id)"
        " WHERE b.newest_interval_end > %s AND b.newest_interval_end <= %s"
        " AND b.oldest_interval_end <= %s",
        (day.start, day.end + SPAN, day.end),
        ("agent_id", "region", "newest_interval_end", "readings", "latency_s"),
    )
    table["latency_s"] = table["latency_s"].astype(float)
    return table


def ingest(committed: pd.DataFrame, enrolled: pd.DataFrame) -> pd.DataFrame:
    """Per region: agents expected or heard, agents heard, batches, readings, latency percentiles.

    An agent is expected when enrolled by the day's end and not revoked; one enrolled later
    that sent the day's readings (an older gateway re-enrolled) counts as heard.
    """
    known = pd.concat([enrolled, committed[["agent_id", "region"]]]).drop_duplicates("agent_id")
    agents = known.groupby("region").size().rename("agents").reset_index()
    grouped = committed.groupby("region")
    table = pd.DataFrame(
        {
            "agents_heard": grouped["agent_id"].nunique(),
            "batches": grouped.size(),
            "readings": grouped["readings"].sum(),
        }
    )
    for quantile in LATENCY_QUANTILES:
        table[f"latency_p{round(quantile * 100)}_s"] = grouped["latency_s"].quantile(quantile)
    table = agents.merge(table.reset_index(), on="region", how="outer")
    table[["agents", "agents_heard", "batches", "readings"]] = (
        table[["agents", "agents_heard", "batches", "readings"]].fillna(0).astype(int)
    )
    return table.sort_values("region", ignore_index=True)


def hourly_latency(committed: pd.DataFrame, day: Day) -> pd.DataFrame:
    """Per hour of the day's data: batches and the 95th percentile of their latency."""
    hours = pd.date_range(day.start, periods=24, freq="1h")
    ends = pd.to_datetime(committed["newest_interval_end"], utc=True)
    grouped = committed.groupby((ends - pd.Timedelta(minutes=15)).dt.floor("1h"))
    return pd.DataFrame(
        {
            "batches": grouped.size().reindex(hours, fill_value=0),
            "latency_p95_s": grouped["latency_s"].quantile(0.95).reindex(hours),
        }
    ).rename_axis("hour")


def refusals(conn: psycopg.Connection, day: Day) -> pd.DataFrame:
    """Refused batches' reasons with a refusal during the day (counts are since the first)."""
    return _frame(
        conn,
        "SELECT agent_id, region, reason, refusals, first_at, last_at, last_detail"
        " FROM batch_refusals WHERE last_at >= %s AND first_at < %s ORDER BY last_at DESC",
        (day.start, day.end),
        ("agent_id", "region", "reason", "refusals", "first_at", "last_at", "last_detail"),
    )


def quality_alerts(conn: psycopg.Connection, day: Day) -> pd.DataFrame:
    """The core's quality alerts whose window overlaps the day."""
    return _frame(
        conn,
        "SELECT kind, window_start, window_end, received, flagged, threshold, raised_at"
        " FROM quality_alerts WHERE window_start < %s AND window_end > %s ORDER BY raised_at",
        (day.end, day.start),
        ("kind", "window_start", "window_end", "received", "flagged", "threshold", "raised_at"),
    )


Alert = tuple[str, str, Any, str]  # what, where, since, detail


def _quality_alerts(raised: pd.DataFrame) -> list[Alert]:
    return [
        (
            f"quality: {row.kind}",
            "core",
            row.raised_at,
            (
                f"{row.flagged:,} of {row.received:,} readings suspect"
                f" ({row.flagged / max(row.received, 1):.1%}, threshold {row.threshold:.0%})"
                f" from {row.window_start:%H:%M} to {row.window_end:%H:%M}"
            ),
        )
        for row in raised.itertuples()
    ]


def _transformer_alerts(day: Day, fleet: pd.DataFrame) -> list[Alert]:
    found: list[Alert] = []
    for row in fleet.itertuples():
        if not pd.isna(row.gas_alarm_at):
            reasons = "; ".join(row.gas_alarm_reasons or [])
            detail = f"{reasons}; IEC 60599 {row.iec_fault or '-'}, Duval {row.duval_zone or '-'}"
            found.append(("transformer: dissolved gases", row.transformer_id, row.gas_alarm_at,
                          detail))  # fmt: skip
        for part, minutes in (
            ("hot spot", row.minutes_over_hot_spot_limit),
            ("top oil", row.minutes_over_top_oil_limit),
        ):
            if minutes:
                found.append((f"transformer: {part} over its limit", row.transformer_id,
                              day.start, f"{minutes} min over the limit"))  # fmt: skip
    return found


def _refusal_alerts(refused: pd.DataFrame) -> list[Alert]:
    return [
        (f"batches refused: {row.reason}", row.agent_id, row.last_at,
         f"{row.refusals:,} since {row.first_at:%Y-%m-%d %H:%M}; {row.last_detail}")
        for row in refused.itertuples()
    ]  # fmt: skip


def _silent_agents(day: Day, committed: pd.DataFrame, enrolled: pd.DataFrame) -> list[Alert]:
    heard = set(committed["agent_id"])
    return [
        ("agent: no meter readings of the day", agent.agent_id, day.start, f"region {agent.region}")
        for agent in enrolled.itertuples()
        if agent.agent_id not in heard
    ]


def alerts(  # noqa: PLR0913 - one frame per section alerts are drawn from
    day: Day,
    *,
    quality_raised: pd.DataFrame,
    fleet: pd.DataFrame,
    refused: pd.DataFrame,
    committed: pd.DataFrame,
    enrolled: pd.DataFrame,
) -> pd.DataFrame:
    """Everything that needs someone's attention, one line each: what, where, since, detail."""
    lines = [
        *_quality_alerts(quality_raised),
        *_transformer_alerts(day, fleet),
        *_refusal_alerts(refused),
        *_silent_agents(day, committed, enrolled),
    ]
    return pd.DataFrame(lines, columns=["what", "where", "since", "detail"])


def enrolled_agents(conn: psycopg.Connection, day: Day) -> pd.DataFrame:
    """Agents enrolled before the day ended, not revoked before it began: expected to send it."""
    return _frame(
        conn,
        "SELECT agent_id, region FROM agents WHERE enrolled_at < %s"
        " AND (revoked_at IS NULL OR revoked_at > %s) ORDER BY agent_id",
        (day.end, day.start),
        ("agent_id", "region"),
    )
