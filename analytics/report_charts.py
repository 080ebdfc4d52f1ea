"""The daily report's charts: matplotlib figures written as PNG files, one per section.

Each PNG says what it plots in its metadata (``Title``, and ``Description``: one line per
series), so a reader of the file alone, or a test, can tell which series it holds. Colours are
fixed per kind of series, the same in every chart. A chart with nothing to plot is not written
(the page says why instead).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # files only, no display: the report runs on servers and in CI

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure

ACTUAL = "#1f5fa8"  # measured energy, and anything measured
FORECAST = "#d9730d"  # the day-ahead forecast
BAND = "#f6c89f"  # its 80 % band
RECEIVED, ESTIMATED, MISSING, QUARANTINED = "#2e8540", "#f2b705", "#b0b0b0", "#b3261e"
LIMIT = "#b3261e"  # an asset's limit
DPI = 110
MOST_ROWS = 40  # bars in a chart; the page's table lists them all


def _save(
    figure: Figure, path: Path, title: str, series: list[str], *, bottom: float = 0.0
) -> Path:
    """Title it, lay it out (``bottom``: the share kept free for a figure legend), write it."""
    figure.suptitle(title, fontsize=12)
    figure.tight_layout(rect=(0, bottom, 1, 1))
    figure.savefig(path, dpi=DPI, metadata={"Title": title, "Description": "\n".join(series)})
    plt.close(figure)
    return path


def _by_hour(part: pd.DataFrame, column: str) -> pd.Series:
    """``column`` for each of the day's 24 hours, NaN where absent (a gap, not a line across)."""
    hours = pd.to_datetime(part["hour"], utc=True).dt.hour
    return pd.Series(part[column].to_numpy(), index=hours).reindex(range(24))


def load_curves(curves: pd.DataFrame, path: Path, day: str) -> Path | None:
    """Each region's hourly energy against its forecast and the 80 % band."""
    regions = sorted(curves["region"].unique())
    if not regions:
        return None
    columns = min(2, len(regions))
    rows = math.ceil(len(regions) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 3.2 * rows + 0.6),
                                squeeze=False)  # fmt: skip
    series = []
    for axis, region in zip(axes.flat, regions, strict=False):
        part = curves[curves["region"] == region]
        if part["forecast_kwh"].notna().any():
            axis.fill_between(range(24), _by_hour(part, "lower_kwh"), _by_hour(part, "upper_kwh"),
                              color=BAND, label="80 % band", step="mid")  # fmt: skip
            axis.step(range(24), _by_hour(part, "forecast_kwh"), where="mid", color=FORECAST,
                      linestyle="--", label="forecast")  # fmt: skip
            series += [f"band {region}", f"forecast {region}"]
        if part["kwh"].notna().any():
            axis.step(range(24), _by_hour(part, "kwh"), where="mid", color=ACTUAL, linewidth=2,
                      label="actual")  # fmt: skip
            series.append(f"actual {region}")
        axis.set(title=region, xlabel="hour (UTC)", ylabel="kWh", xlim=(-0.5, 23.5))
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(regions) :]:
        axis.set_visible(False)
    legend: dict[str, Artist] = {}  # one entry per label, whichever panel drew it
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    figure.legend(handles=list(legend.values()), labels=list(legend), loc="lower center",
                  ncols=3, fontsize=9)  # fmt: skip
    return _save(figure, path, f"Consumption against the day-ahead forecast, {day}", series,
                 bottom=0.4 / (3.2 * rows + 0.6))  # fmt: skip


def _most(frame: pd.DataFrame, by: pd.Series, what: str) -> tuple[pd.DataFrame, str]:
    """The ``MOST_ROWS`` rows highest ``by`` (ascending, for bars drawn bottom up), a title note."""
    if len(frame) <= MOST_ROWS:
        return frame.loc[by.sort_values().index], ""
    return frame.loc[by.nlargest(MOST_ROWS).sort_values().index], (
        f" ({MOST_ROWS} highest {what} of {len(frame):,})"
    )


def losses(table: pd.DataFrame, path: Path, day: str) -> Path | None:
    """Technical losses per substation, as a share of the energy entering it."""
    known = table.dropna(subset=["losses_share"])
    if known.empty:
        return None
    ordered, note = _most(known, known["losses_share"], "shares")
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(ordered) + 1.6))
    axis.barh(ordered["substation"], ordered["losses_share"] * 100, color=ACTUAL)
    axis.set(xlabel="losses, % of feeder-head energy")
    axis.grid(axis="x", alpha=0.3)
    series = [f"losses {name}" for name in ordered["substation"]]
    return _save(figure, path, f"Technical losses per substation, {day}{note}", series)


def quality(table: pd.DataFrame, path: Path, day: str) -> Path | None:
    """Per region: the shares of expected readings read, estimated, missing and quarantined."""
    known = table[table["expected"] > 0]
    if known.empty:
        return None
    figure, axis = plt.subplots(figsize=(8, 0.55 * len(known) + 1.8))
    left = pd.Series(0.0, index=known.index)
    parts = (
        ("read", "received", RECEIVED),
        ("estimated", "estimated", ESTIMATED),
        ("missing", "missing", MISSING),
    )
    for label, column, colour in parts:
        share = known[column] / known["expected"] * 100
        axis.barh(known["region"], share, left=left, color=colour, label=label)
        left += share
    axis.scatter(known["quarantined_share"] * 100, known["region"], color=QUARANTINED,
                 marker="x", zorder=3, label="quarantined")  # fmt: skip
    axis.set(xlabel="% of expected readings (96 per customer meter)", xlim=(0, 100))
    axis.legend(fontsize=8, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    series = [f"{label} {region}" for label, _, _ in parts for region in known["region"]]
    series += [f"quarantined {region}" for region in known["region"]]
    return _save(figure, path, f"Data completeness by region, {day}", series)


def transformers(fleet: pd.DataFrame, path: Path, day: str) -> Path | None:
    """Each transformer's highest hot spot of the day against its limit."""
    if fleet.empty:
        return None
    margin = fleet["hot_spot_max_c"].astype(float) - fleet["hot_spot_limit_c"].astype(float)
    shown, note = _most(fleet, margin, "against their limit")
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.6))
    names = shown["transformer_id"]
    axis.barh(names, shown["hot_spot_max_c"].astype(float), color=ACTUAL, label="hot spot, max")
    axis.scatter(shown["hot_spot_limit_c"].astype(float), names, color=LIMIT, marker="|",
                 s=300, zorder=3, label="limit")  # fmt: skip
    axis.set(xlabel="°C")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    series = [f"hot spot {name}" for name in names] + [f"limit {name}" for name in names]
    return _save(figure, path, f"Transformer hot spots, {day}{note}", series)


def duration_unit(seconds: float) -> tuple[str, float]:
    """The unit latencies up to ``seconds`` read best in, and its size in seconds."""
    for unit, size, below in (("s", 1, 120), ("min", 60, 7_200), ("h", 3_600, 172_800)):
        if seconds < below:
            return unit, size
    return "d", 86_400


def latency(hourly: pd.DataFrame, path: Path, day: str) -> Path | None:
    """Batches per hour of the day's data and the 95th percentile of their latency."""
    if not hourly["batches"].any():
        return None
    figure, axis = plt.subplots(figsize=(8, 3.6))
    hours = pd.DatetimeIndex(hourly.index).hour
    axis.bar(hours, hourly["batches"], color=MISSING, label="batches")
    axis.set(xlabel="hour of the readings (UTC)", ylabel="batches", xlim=(-0.5, 23.5))
    unit, size = duration_unit(float(hourly["latency_p95_s"].max()))
    latency_axis = axis.twinx()
    latency_axis.plot(hours, hourly["latency_p95_s"] / size, color=FORECAST, marker="o",
                      label="latency p95")  # fmt: skip
    latency_axis.set(ylabel=f"latency p95, {unit}")
    latency_axis.set_ylim(bottom=0)
    figure.legend(loc="lower center", ncols=2, fontsize=9)
    series = ["batches per hour", "latency p95 per hour"]
    return _save(figure, path, f"Ingest: batches and latency (interval end to commit), {day}",
                 series, bottom=0.12)  # fmt: skip
