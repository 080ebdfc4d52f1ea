"""Regions enforced by the database: a login given North sees North rows only, however it asks.

Two agents, one enrolled in North and one in South, send the same kinds of batches through a
real core (readings, telemetry, a conflicting repeat kept in quarantine, an estimate replaced,
a refused value, a key rotation, a batch refused for its signature); a third agent in each
region never sends (silent). Then logins limited to each region, and one with every
region, read every regional object of the data dictionary, the chunks or partitions directly,
and a function running with the owner's rights.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fix_db import operator_dsn, store_one_reading
from fix_services import governance, wait_until
from pgcluster import CORE_LOGIN, OPERATOR_LOGIN, OWNER_LOGIN, as_login
from signed_batches import KEY, answer, meter, payload, seal, send

from core_ingest import agents
from core_ingest.schema import PARTITIONED_TABLES, TIMESCALEDB
from core_ingest.schema.dictionary import load_dictionary
from proto import public_key_bytes
from proto.quality import QualityFlag

pytestmark = pytest.mark.integration

REGIONS = {"North": ("north-1", 1), "South": ("south-1", 101)}  # agent, first meter number
VIEWERS = {"North": "viewer_north", "South": "viewer_south", None: "viewer_all"}
ESTIMATED = int(QualityFlag.ESTIMATED)


def batches_of(first: int) -> list:
    """Readings with telemetry; a conflicting repeat; an estimate, then its real reading."""
    meters = [first, first + 1, first + 2]
    rotated = payload(meters=meters, interval=3)
    rotated.rotations.add(
        old_key_id="k1", new_key_id="k2", old_meters=[meter(first)], new_meters=[meter(first + 50)]
    )
    return [
        payload(meters=meters, telemetry=4),
        payload(meters=[first], energy=999),  # another value for a stored reading: quarantined
        payload(meters=[first], interval=1, flags=[ESTIMATED]),
        payload(meters=[first], interval=1, energy=120),  # replaces the estimate
        payload(meters=meters, interval=2, energy=[100, 100, 20_000_000]),  # one refused
        rotated,
    ]


@pytest.fixture
def regional(storage_dsn: str, core_server: str) -> dict[str | None, str]:
    """Both regions' data stored; a viewer login per region and one for all; their DSNs."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        for region, (agent_id, _first) in REGIONS.items():
            agents.enroll(conn, agent_id, public_key_bytes(KEY.public_key()), region=region)
            silent = public_key_bytes(Ed25519PrivateKey.generate().public_key())
            agents.enroll(conn, f"{agent_id}-silent", silent, region=region)
        for login in VIEWERS.values():
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone():
                conn.execute(f"CREATE ROLE {login} LOGIN")  # roles are the cluster's
    for agent_id, first in REGIONS.values():
        for sequence, body in enumerate(batches_of(first), start=1):  # one at a time: in order
            (ack,) = send(core_server, seal(body, sequence=sequence, agent_id=agent_id))
            assert answer(ack) == "ACK_STATUS_ACCEPTED", ack.detail
        forged = seal(sequence=99, agent_id=agent_id, key=Ed25519PrivateKey.generate())
        assert [answer(a) for a in send(core_server, forged)] == ["REJECT_REASON_BAD_SIGNATURE"]
    wait_until(  # refusals are written within a second of the answer
        lambda: len(rows(storage_dsn, "SELECT agent_id FROM batch_refusals")) == len(REGIONS),
        timeout=30,
        what="both refusals recorded",
    )
    with psycopg.connect(storage_dsn, autocommit=True) as conn:  # as `governance export` records
        conn.execute(
            "INSERT INTO exports (dataset, filter, k, measured_k, area_level, meters, suppressed,"
            " key_ids, file_name, file_sha256) VALUES ('weekly-profiles', '{}', 2, 2, 'region',"
            " 6, 0, '{k1}', 'all.csv', sha256(''))"
        )
        conn.execute(
            "INSERT INTO export_meters SELECT 1, m.meter_id, r.region_id FROM meters m"
            " JOIN regions r ON r.name = m.region"
        )
        for region in REGIONS:  # as `analytics assets load` and `analytics health run` write
            conn.execute(
                "INSERT INTO transformer_assets (transformer_id, substation, region, rated_kva)"
                " VALUES (%s, %s, %s, 630)",
                (f"{region}-T1", f"{region}-S1", region),
            )
            conn.execute(
                "INSERT INTO transformer_health (transformer_id, day, region, samples,"
                " minutes_over_hot_spot_limit, minutes_over_top_oil_limit, model,"
                " model_version, input_from, input_to) VALUES (%s, '2026-11-02', %s, 0, 0, 0,"
                " 'test', 'test', '2026-10-26', '2026-11-03')",
                (f"{region}-T1", region),
            )
            conn.execute(  # as `analytics forecast predict` writes
                "INSERT INTO load_forecasts (series, region, hour, point_kwh, lower_kwh,"
                " upper_kwh, model, model_version, training_from, training_to) VALUES"
                " (%s, %s, '2026-11-03', 10, 9, 11, 'test', 'test', '2026-10-01', '2026-11-03')",
                (f"region:{region}", region),
            )
            conn.execute(  # as `analytics forecast train` writes
                "INSERT INTO forecast_models (series, region, model, model_version, mape,"
                " backtest_from, backtest_days, training_from, training_to) VALUES (%s, %s,"
                " 'test', 'test', '{\"test\": 0.01}', '2026-10-20', 14, '2026-10-01',"
                " '2026-11-03')",
                (f"region:{region}", region),
            )
    for region, login in VIEWERS.items():
        where = ("--region", region) if region else ("--all-regions",)
        done = governance(
            "access", "grant", "--login", login, "--role", "operations", *where, dsn=storage_dsn
        )
        assert done.returncode == 0, done.stderr
    return {region: as_login(storage_dsn, login) for region, login in VIEWERS.items()}


def rows(dsn: str, query: str) -> set[tuple]:
    with psycopg.connect(dsn) as conn:
        return {tuple(map(str, row)) for row in conn.execute(query).fetchall()}


def regional_objects() -> list[str]:
    return [name for name, entry in load_dictionary().objects.items() if entry.region]


def test_each_region_sees_its_rows_only_however_it_asks(regional, storage_dsn):
    """The core places rows in the agent's region; North and South split every regional object.

    Nothing shared, nothing lost, in every table and view of the dictionary; chunks and
    partitions read directly are refused; a function with the owner's rights still filters.
    """
    for table in ("meter_readings", "transformer_telemetry", "reading_quarantine",
                  "reading_corrections", "refused_values", "pseudonym_map"):  # fmt: skip
        placed = rows(
            storage_dsn,
            f"SELECT DISTINCT r.name FROM {table} t JOIN regions r USING (region_id)",  # noqa: S608
        )
        assert placed == {("North",), ("South",)}, table
    for name in regional_objects():
        query = f"SELECT * FROM {name}"  # noqa: S608 - names from the dictionary
        every, north, south = (rows(regional[r], query) for r in (None, "North", "South"))
        assert every == rows(storage_dsn, query), name  # no scope: what the superuser sees
        assert north | south == every, name
        assert not north & south, name
        if name != "substation_day_losses":  # no feeder heads in these batches
            assert north, f"{name}: North sees nothing"
            assert south, f"{name}: South sees nothing"
    south_id = rows(storage_dsn, "SELECT region_id FROM regions WHERE name = 'South'").pop()[0]
    asked = f"SELECT count(*) FROM meter_readings WHERE region_id = {south_id}"  # noqa: S608
    assert rows(regional["North"], asked) == {("0",)}
    _chunks_and_partitions_are_refused(regional["North"], storage_dsn)
    _a_definer_function_filters_by_who_connected(regional, storage_dsn)


def _chunks_and_partitions_are_refused(north: str, storage_dsn: str) -> None:
    """They are tables of their own, past the policies: no grant reaches them."""
    for table in PARTITIONED_TABLES:
        children = (
            f"SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = '{table}'::regclass"  # noqa: S608 - a constant
        )
        parts = rows(storage_dsn, children)
        assert parts, table
        for (part,) in parts:
            with (
                psycopg.connect(north) as conn,
                pytest.raises(psycopg.errors.InsufficientPrivilege),
            ):
                conn.execute(f"SELECT count(*) FROM {part}")  # noqa: S608 - the catalog's name


def _a_definer_function_filters_by_who_connected(regional: dict, storage_dsn: str) -> None:
    with psycopg.connect(as_login(storage_dsn, OWNER_LOGIN), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION all_energy() RETURNS bigint LANGUAGE sql SECURITY DEFINER"
            " AS 'SELECT sum(energy_wh) FROM meter_readings'"
        )
    totals = {r: rows(dsn, "SELECT all_energy()").pop()[0] for r, dsn in regional.items()}
    assert int(totals["North"]) + int(totals["South"]) == int(totals[None])
    assert int(totals["North"]) > 0


@pytest.mark.parametrize("storage", [TIMESCALEDB])  # scopes are rows: storage is moot
def test_scopes_shrink_to_nothing_and_lift_again(regional, storage_dsn):
    """Taking a login's last region leaves it seeing nothing, never everything."""
    taken = governance(
        "access", "revoke", "--login", VIEWERS["North"], "--role", "operations",
        "--region", "North", dsn=storage_dsn,
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr
    assert "sees no region" in taken.stdout
    for name in regional_objects():
        assert not rows(regional["North"], f"SELECT * FROM {name}"), name  # noqa: S608
    shown = json.loads(governance("access", "show", "--json", dsn=storage_dsn).stdout)
    scopes = {m["login"]: m["regions"] for m in shown}
    assert scopes[VIEWERS["North"]] == []
    assert scopes[VIEWERS["South"]] == ["South"]
    assert scopes[VIEWERS[None]] is None
    lifted = governance(
        "access", "grant", "--login", VIEWERS["North"], "--role", "operations", "--all-regions",
        dsn=storage_dsn,
    )  # fmt: skip
    assert "sees every region" in lifted.stdout
    query = "SELECT * FROM meter_readings"
    assert rows(regional["North"], query) == rows(storage_dsn, query)
    unknown = governance(
        "access", "grant", "--login", VIEWERS["North"], "--role", "operations",
        "--region", "Nowhere", dsn=storage_dsn,
    )  # fmt: skip
    assert unknown.returncode == 1
    assert "no region 'Nowhere': one of North, South, unassigned" in unknown.stderr
    with psycopg.connect(storage_dsn) as conn:
        audited = conn.execute(
            "SELECT detail FROM audit_log WHERE action = 'access.revoke' AND object = %s",
            (VIEWERS["North"],),
        ).fetchone()[0]
    assert audited == {"role": "operations", "regions_taken": ["North"], "regions": []}


@pytest.mark.parametrize("storage", [TIMESCALEDB])  # ownership works alike on both storages
def test_no_scope_is_granted_while_a_superuser_owns_a_view(storage_dsn):
    """A superuser skips the policies, and a view reads with its owner's rights: refuse."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, "north-1", public_key_bytes(KEY.public_key()), region="North")
        conn.execute("ALTER VIEW region_daily OWNER TO postgres")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'viewer_north'").fetchone():
            conn.execute("CREATE ROLE viewer_north LOGIN")
    init = governance("access", "init", dsn=storage_dsn)
    assert "warning: views region_daily are owned by a role that bypasses" in init.stderr
    refused = governance(
        "access", "grant", "--login", "viewer_north", "--role", "analyst", "--region", "North",
        dsn=storage_dsn,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "region scopes cannot hold: views region_daily are owned by" in refused.stderr
    with psycopg.connect(storage_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM region_scopes").fetchone() == (0,)


@pytest.mark.parametrize("storage", [TIMESCALEDB])  # TimescaleDB's chunks copy grants
def test_new_chunks_shed_the_grants_of_any_role_name(storage_dsn):
    """A role whose name needs quotes ("BI-Reader") is revoked like any other."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'BI-Reader'").fetchone():
            conn.execute('CREATE ROLE "BI-Reader"')
        conn.execute('GRANT SELECT ON meter_readings TO "BI-Reader"')
    chunk = store_one_reading(storage_dsn, TIMESCALEDB)  # a new chunk, made by the insert
    with psycopg.connect(storage_dsn) as conn:
        grantees = conn.execute(
            "SELECT array_agg(a.grantee::regrole::text) FROM pg_class c, aclexplode(c.relacl) a"
            " WHERE c.oid = %s::regclass AND a.grantee <> c.relowner",
            (chunk,),
        ).fetchone()[0]
    assert grantees is None


@pytest.mark.parametrize("storage", [TIMESCALEDB])  # the rules are the same on both storages
def test_regions_are_never_renamed_and_scopes_never_meet_ingest(storage_dsn):
    """A rename would move rows between scopes; ingest bypasses scopes; revoking all is none."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, "north-1", public_key_bytes(KEY.public_key()), region="North")
    with (
        psycopg.connect(operator_dsn(storage_dsn)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="never renamed"),
    ):
        conn.execute("UPDATE regions SET name = 'South' WHERE name = 'North'")
    ingest = governance("access", "grant", "--login", CORE_LOGIN, "--role", "ingest",
                        "--region", "North", dsn=storage_dsn)  # fmt: skip
    assert "members of ingest bypass row-level security" in ingest.stderr
    everything = governance("access", "revoke", "--login", OPERATOR_LOGIN, "--role",
                            "operations", "--region", "North", "--region", "unassigned",
                            dsn=storage_dsn)  # fmt: skip
    assert everything.returncode == 0, everything.stderr
    assert "now sees no region" in everything.stdout
    governance("access", "grant", "--login", OPERATOR_LOGIN, "--role", "operations",
               "--all-regions", dsn=storage_dsn)  # fmt: skip
