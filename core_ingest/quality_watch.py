"""The data-quality alarm: too many suspect readings received in the last hour.

The reference case's rule: alert when more than 0.5 % of the readings received in the last hour
are flagged corrupt. Here "corrupt" is any SUSPECT quality flag the edge's VEE ruleset set
(proto/quality.py), and "received" is when the batch reached the core. The batch ledger
already counts both per batch (``meter_readings``, ``suspect_readings``), so a check is one
indexed sum over the last hour's ledger rows, cheap enough to run every minute from every
core process. An advisory lock and the alerts table itself make it one alert per breached
window across all core processes: while an alert of the kind is younger than the window, no
second one is raised.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool

log = logging.getLogger(__name__)

SUSPECT_SHARE = "suspect-share"


@dataclass(frozen=True, slots=True)
class AlertRule:
    """When to raise the suspect-share alert, and how often to look (``[quality]``)."""

    threshold: float = 0.005  # share of received readings, 0..1
    window_seconds: float = 3600.0
    check_seconds: float = 60.0
    # Fewer readings than this in the window raise nothing: one substation's batch at night is
    # no basis for a share (2,000 readings, 10 of them flagged, would be 0.5 %).
    min_readings: int = 10_000


@dataclass(frozen=True, slots=True)
class QualityAlert:
    """One raised alert, as stored in ``quality_alerts``."""

    alert_id: int
    kind: str
    window_start: dt.datetime
    window_end: dt.datetime
    received: int
    flagged: int
    threshold: float

    @property
    def share(self) -> float:
        """Flagged readings as a share of those received in the window."""
        return self.flagged / self.received


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The row an aggregate or ``RETURNING`` always yields."""
    if row is None:
        raise RuntimeError("the database returned no row where one is always returned")
    return row


async def check_suspect_share(
    conn: psycopg.AsyncConnection, rule: AlertRule, *, raised_by: str
) -> QualityAlert | None:
    """Raise and return an alert when the last window breaches the rule, else None.

    Used by every core's background watch and by ``core-ingest quality-check``.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (SUSPECT_SHARE,))
        cur = await conn.execute(
            "SELECT now() - make_interval(secs => %s), now(),"
            " coalesce(sum(meter_readings), 0)::bigint, coalesce(sum(suspect_readings), 0)::bigint"
            " FROM batches WHERE received_at > now() - make_interval(secs => %s)",
            (rule.window_seconds, rule.window_seconds),
        )
        start, end, received, flagged = _one(await cur.fetchone())
        if received < max(rule.min_readings, 1) or flagged / received <= rule.threshold:
            return None
        cur = await conn.execute(
            "SELECT 1 FROM quality_alerts WHERE kind = %s AND raised_at > %s",
            (SUSPECT_SHARE, start),
        )
        if await cur.fetchone():
            return None  # this breach is already alerted
        cur = await conn.execute(
            "INSERT INTO quality_alerts (kind, window_start, window_end, received, flagged,"
            " threshold, raised_by) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING alert_id",
            (SUSPECT_SHARE, start, end, received, flagged, rule.threshold, raised_by),
        )
        (alert_id,) = _one(await cur.fetchone())
    return QualityAlert(alert_id, SUSPECT_SHARE, start, end, received, flagged, rule.threshold)


@dataclass(frozen=True, slots=True)
class WatchStatistics:
    """What the quality watch did since the core started."""

    alerts_raised: int
    checks_failed: int


class QualityWatch:
    """Checks the rule every ``check_seconds`` on a pooled connection; counts and logs alerts."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool, rule: AlertRule) -> None:
        """Args: pool: connections to the database; rule: the thresholds from the config."""
        self._pool = pool
        self._rule = rule
        self._raised_by = f"core-ingest@{socket.gethostname()}"
        self.alerts_raised = 0
        self.checks_failed = 0

    def statistics(self) -> WatchStatistics:
        """Alerts raised and checks that could not run, for the metrics."""
        return WatchStatistics(self.alerts_raised, self.checks_failed)

    async def run(self) -> None:
        """Check until cancelled; a failed check (database down) is logged and tried later."""
        while True:
            await asyncio.sleep(self._rule.check_seconds)
            try:
                await self.check()
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                self.checks_failed += 1
                log.warning("quality check failed: %s", exc)

    async def check(self) -> QualityAlert | None:
        """One check; logs and counts a raised alert."""
        async with self._pool.connection() as conn:
            alert = await check_suspect_share(conn, self._rule, raised_by=self._raised_by)
        if alert:
            self.alerts_raised += 1
            log.warning(
                "quality alert %d: %.2f %% of %d readings received since %s are flagged "
                "suspect (threshold %.2f %%)",
                alert.alert_id,
                100 * alert.share,
                alert.received,
                f"{alert.window_start:%Y-%m-%d %H:%M:%S}",
                100 * alert.threshold,
            )
        return alert
