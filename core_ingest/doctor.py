"""``core-ingest doctor``: what is wrong at the center, and what to do about it.

The database (reachable, versions, schema current), each running core (read from its
``/metrics``: connection pool, OpenLineage backlog, readings' latency), the agents (silent ones,
refused batches, latency over the last hour, from ``agent_activity``) and the data (the
suspect-share alert, quarantine awaiting inspection, yesterday's completeness). Each finding
says what to do; the screen is the edge doctor's (``proto.diagnosis``).
"""

from __future__ import annotations

import datetime as dt
import http.client
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from core_ingest.schema import MIGRATIONS, SCHEMA_VERSION, applied_versions, recorded_storage
from proto.diagnosis import ACTION, OK, WARN, Finding, duration, when

HEADINGS = {"database": "DATABASE", "core": "CORES", "agents": "AGENTS", "data": "DATA"}
SILENT_MINUTES = 35  # two 15-minute intervals and slack: meters-only agents send per interval
LATENCY_WARN_SECONDS = 1_800.0  # an agent's p95 over the last hour beyond this: a warning
LINEAGE_QUEUED_WARN = 10_000  # OpenLineage events waiting in a core's memory
METRICS_TIMEOUT_SECONDS = 3.0
SHOWN_AGENTS = 10  # agents named one by one; more are counted in one finding


def diagnose(dsn: str, *, metrics: list[str], silent_minutes: int, at_ms: int) -> list[Finding]:
    """Every finding: the database and what it holds, then each core's metrics."""
    found = list(_database(dsn, silent_minutes=silent_minutes, at_ms=at_ms))
    found += [finding for target in metrics for finding in _core(target)]
    return found


def _database(dsn: str, *, silent_minutes: int, at_ms: int) -> Iterator[Finding]:
    try:
        conn = psycopg.connect(dsn, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        yield Finding(
            "database",
            "PostgreSQL",
            ACTION,
            f"unreachable: {str(exc).strip().splitlines()[0]}",
            "start it or fix [database] dsn; agents keep their batches and send them when it"
            " is back",
        )
        return
    with conn:
        yield _versions(conn)
        current = yield from _schema(conn)
        if not current:
            return
        try:
            yield from _agents(conn, silent_minutes=silent_minutes, at_ms=at_ms)
            yield from _data(conn, at_ms=at_ms)
        except psycopg.errors.InsufficientPrivilege as exc:
            yield Finding(
                "database",
                "grants",
                ACTION,
                f"this login may not read what the doctor reads ({exc.diag.message_primary})",
                "connect as a member of operations: `governance access grant LOGIN operations`",
            )


def _versions(conn: psycopg.Connection) -> Finding:
    server = conn.execute("SHOW server_version").fetchone()
    timescaledb = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    seen = f"PostgreSQL {server[0] if server else '?'}"
    seen += f", TimescaleDB {timescaledb[0]}" if timescaledb else ", no TimescaleDB"
    return Finding("database", "PostgreSQL", OK, f"answers: {seen}")


def _schema(conn: psycopg.Connection) -> Generator[Finding, None, bool]:
    """The schema's state; returns (as the generator's value) whether it is current."""
    applied = applied_versions(conn)
    newest = max(applied, default=0)
    pending = [m.name for m in MIGRATIONS if m.version not in applied]
    if newest > SCHEMA_VERSION:
        yield Finding(
            "database",
            "schema",
            ACTION,
            f"version {newest} is newer than this release's {SCHEMA_VERSION}",
            "run the core release that migrated it",
        )
        return False
    if pending:
        yield Finding(
            "database",
            "schema",
            ACTION,
            f"version {newest}, {len(pending)} migrations pending ({pending[0]}...)",
            "`core-ingest migrate` as the schema's owner, then `governance access init`",
        )
        return False
    yield Finding(
        "database", "schema", OK, f"version {newest}, current; storage {recorded_storage(conn)}"
    )
    return True


def _agents(conn: psycopg.Connection, *, silent_minutes: int, at_ms: int) -> Iterator[Finding]:
    rows = conn.execute(
        "SELECT agent_id, region, last_committed_at, latency_p95_s, batches_last_hour"
        " FROM agent_activity WHERE NOT revoked ORDER BY agent_id"
    ).fetchall()
    threshold = dt.timedelta(minutes=silent_minutes)
    now = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
    silent = [r for r in rows if r[2] is None or now - r[2] > threshold]
    for agent_id, region, last, *_ in silent[:SHOWN_AGENTS]:
        last_heard = f"last batch {when(_ms(last), at_ms)}" if last else "never sent a batch"
        yield Finding(
            "agents",
            agent_id,
            ACTION,
            f"silent ({region}): {last_heard}",
            "ask the technician at its substation to run `edge-agent doctor`",
        )
    if len(silent) > SHOWN_AGENTS:
        yield Finding(
            "agents",
            "more",
            ACTION,
            f"{len(silent) - SHOWN_AGENTS} more silent agents",
            f"the whole list (silent for over {silent_minutes} min): agent_activity, or the"
            " silent_agents view (over 35 min)",
        )
    yield from _refusals(conn, at_ms)
    heard = [r for r in rows if r[4]]
    if not heard:
        return
    worst_p95, worst_agent = max((float(r[3] or 0.0), r[0]) for r in heard)
    seen = (
        f"{len(heard)} of {len(rows)} agents sent in the last hour; worst latency p95"
        f" {duration(worst_p95)} ({worst_agent})"
    )
    if worst_p95 > LATENCY_WARN_SECONDS:
        yield Finding(
            "agents",
            "latency",
            WARN,
            seen,
            "an agent catching up after an outage drains from both ends; otherwise check its"
            " uplink: SELECT * FROM agent_activity ORDER BY latency_p95_s DESC;",
        )
    else:
        yield Finding("agents", "latency", OK, seen)


def _refusals(conn: psycopg.Connection, at_ms: int) -> Iterator[Finding]:
    rows = conn.execute(
        "SELECT agent_id, string_agg(refusals || ' ' || reason, ', ' ORDER BY reason),"
        " max(last_at), (array_agg(last_detail ORDER BY last_at DESC))[1]"
        " FROM batch_refusals WHERE last_at > now() - interval '1 day'"
        " GROUP BY agent_id ORDER BY agent_id"
    ).fetchall()
    for agent_id, counts, last, detail in rows:
        yield Finding(
            "agents",
            agent_id,
            ACTION,
            f"batches refused: {counts}; latest {when(_ms(last), at_ms)}: {detail}",
            "the agent keeps them: fix the cause (its key: `core-ingest agents list`), then"
            " `edge-agent resend` at the gateway",
        )


def _data(conn: psycopg.Connection, *, at_ms: int) -> Iterator[Finding]:
    alert = conn.execute(
        "SELECT raised_at, flagged, received, threshold FROM quality_alerts"
        " WHERE kind = 'suspect-share' AND raised_at > now() - interval '1 hour'"
        " ORDER BY raised_at DESC LIMIT 1"
    ).fetchone()
    if alert:
        raised, flagged, received, threshold = alert
        yield Finding(
            "data",
            "suspect share",
            ACTION,
            f"alert raised {when(_ms(raised), at_ms)}: {flagged} of {received} readings flagged"
            f" (over {threshold:.1%})",
            "see which meters and rules: SELECT * FROM region_day_quality ORDER BY day DESC;",
        )
    else:
        yield Finding("data", "suspect share", OK, "no alert in the last hour")
    row = conn.execute(
        "SELECT coalesce(sum(items), 0),"
        " coalesce(sum(items) FILTER (WHERE last_at > now() - interval '1 day'), 0)"
        " FROM quarantine_awaiting_inspection"
    ).fetchone()
    month, day = row or (0, 0)
    seen = f"{month} items set apart in the last 30 days, {day} of them in the last day"
    if day:
        yield Finding(
            "data",
            "quarantine",
            WARN,
            seen,
            "look at them: SELECT * FROM quarantine_awaiting_inspection ORDER BY last_at DESC;",
        )
    else:
        yield Finding("data", "quarantine", OK, seen)
    yield from _completeness(conn)


def _completeness(conn: psycopg.Connection) -> Iterator[Finding]:
    rows = conn.execute(
        "SELECT region, completeness, estimated_share FROM region_day_completeness"
        " WHERE day = (SELECT max(day) FROM region_day_completeness"
        "              WHERE day < date_trunc('day', now(), 'UTC'))"
        " ORDER BY region"
    ).fetchall()
    if rows:
        shares = ", ".join(f"{r} {c or 0:.1%} read ({e or 0:.1%} estimated)" for r, c, e in rows)
        yield Finding("data", "completeness", OK, f"last full day: {shares}")


def _core(target: str) -> Iterator[Finding]:
    """One running core, from its ``/metrics``."""
    url = target if "://" in target else f"http://{target}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_SECONDS) as reply:  # noqa: S310 - the operator's URL
            text = reply.read().decode()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        yield Finding(
            "core",
            target,
            ACTION,
            f"its metrics do not answer ({exc})",
            "is it running? `systemctl status core-ingest`; [metrics] listen must be set",
        )
        return
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except ValueError as exc:  # not Prometheus's text format: another service on that port
        yield Finding("core", target, ACTION, f"answers, but not with metrics ({exc})")
        return
    yield _pool(target, samples)
    queued = _value(samples, "meterpipe_core_lineage_queued")
    dropped = _value(samples, "meterpipe_core_lineage_events_total", result="dropped")
    if queued is None:
        return
    seen = f"OpenLineage: {queued:.0f} events queued, {dropped or 0:.0f} dropped"
    if dropped or queued > LINEAGE_QUEUED_WARN:
        yield Finding(
            "core",
            f"{target} lineage",
            WARN,
            seen,
            "the consumer is slow or down: check [openlineage]; the batches ledger stays the"
            " authoritative lineage",
        )
    else:
        yield Finding("core", f"{target} lineage", OK, seen)


def _pool(target: str, samples: list[Sample]) -> Finding:
    size = _value(samples, "meterpipe_core_pool_size") or 0
    available = _value(samples, "meterpipe_core_pool_available") or 0
    waiting = _value(samples, "meterpipe_core_pool_requests_waiting") or 0
    seen = f"answers; pool {size - available:.0f} of {size:.0f} connections busy"
    if waiting:
        return Finding(
            "core",
            target,
            WARN,
            f"{seen}, {waiting:.0f} batches waiting for one",
            "raise [database] pool_size, or add a core behind the same address",
        )
    return Finding("core", target, OK, seen)


def _value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The first sample called ``name`` carrying ``labels``."""
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)
