"""The data dictionary describes the live schema exactly, on both storages, and is checked."""

from __future__ import annotations

import re
import tomllib
from importlib import resources

import psycopg
import pytest

from core_ingest.errors import SchemaError
from core_ingest.schema import MIGRATIONS, NATIVE, migrate
from core_ingest.schema.dictionary import differences, load_dictionary, parse_dictionary
from core_ingest.schema.sizes import estimated_rows


def shipped() -> dict:
    text = resources.files("core_ingest.schema").joinpath("dictionary.toml").read_text()
    return tomllib.loads(text)


@pytest.mark.integration
def test_the_dictionary_describes_the_migrated_schema_exactly(storage_dsn):
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        assert differences(conn, load_dictionary()) == []


@pytest.mark.integration
def test_migrate_writes_the_dictionary_as_comments(storage_dsn):
    dictionary = load_dictionary()
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        table, column = conn.execute(
            "SELECT obj_description('meter_readings'::regclass, 'pg_class'),"
            " col_description('meter_readings'::regclass, 3)"  # energy_wh
        ).fetchone()
        view = conn.execute(
            "SELECT obj_description('region_day_quality'::regclass, 'pg_class')"
        ).fetchone()[0]
    assert table == dictionary.objects["meter_readings"].description
    assert column == "Energy of the interval (Wh)"
    assert view == dictionary.objects["region_day_quality"].description


@pytest.mark.integration
def test_an_object_or_column_outside_the_dictionary_is_named(storage_dsn):
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE scratch (x int)")
        conn.execute("ALTER TABLE meters ADD COLUMN serial text")
        conn.execute("DROP VIEW region_day_completeness")  # a view nothing depends on
        found = differences(conn, load_dictionary())
    assert found == [
        "scratch: in the database, not in the dictionary",
        "region_day_completeness: in the dictionary, not in the database",
        "meters.serial: in the database, not in the dictionary",
    ]


@pytest.mark.integration
def test_row_estimates_sum_partitions_and_chunks_without_counting(storage_dsn, storage):
    """3 days of readings land in 3 chunks or partitions; the estimate is their sum."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        if storage == NATIVE:
            for day in (1, 2, 3):
                conn.execute(
                    f"CREATE TABLE meter_readings_p{day} PARTITION OF meter_readings FOR VALUES"
                    f" FROM ('2026-01-0{day} 00:00+00') TO ('2026-01-0{day + 1} 00:00+00')"
                )
        conn.execute(
            "INSERT INTO meter_readings (meter_id, interval_end, energy_wh, register_wh,"
            " quality_flags, poll_time, batch_id, device_no, region_id)"
            " SELECT m, t, 1, 1, 0, t, 1, 1, 1 FROM generate_series(1, 100) m,"
            " generate_series(timestamptz '2026-01-01 00:15+00', '2026-01-03 23:45+00',"
            " interval '6 hours') t"
        )
        before = estimated_rows(conn, ["meter_readings", "agents"])
        conn.execute("ANALYZE")
        after = estimated_rows(conn, ["meter_readings", "agents"])
    assert before == {"meter_readings": 0, "agents": 0}  # never analyzed: no estimate yet
    assert after == {"meter_readings": 1200, "agents": 0}


@pytest.mark.integration
def test_a_dictionary_without_an_entry_for_a_new_migration_fails_the_check(empty_dsn, storage):
    """Stopping before the last migration that adds a table, view or column leaves them out.

    The check names what the dictionary describes and the database lacks.
    """
    adding = re.compile(r"^(CREATE (TABLE|VIEW)|ALTER TABLE .* ADD COLUMN)", re.MULTILINE)
    last = max(m.version for m in MIGRATIONS if adding.search(m.sql))
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        migrate(conn, storage=storage, stop_before=last)
        found = differences(conn, load_dictionary())
    assert found
    assert all(line.endswith(": in the dictionary, not in the database") for line in found), found


def test_a_misspelt_key_is_refused_naming_the_object():
    data = shipped()
    data["objects"]["meters"]["stewart"] = data["objects"]["meters"].pop("steward", "x")
    with pytest.raises(SchemaError, match=r"objects\.meters\.stewart"):
        parse_dictionary(data)


def test_an_unknown_personal_data_class_is_refused():
    data = shipped()
    data["objects"]["meter_readings"]["personal_data"] = "personal"
    with pytest.raises(SchemaError, match=r"objects\.meter_readings\.personal_data"):
        parse_dictionary(data)


def test_retention_must_be_a_duration_and_views_hold_none():
    data = shipped()
    data["objects"]["meters"]["retention"] = "ten years"
    with pytest.raises(SchemaError, match="ISO 8601"):
        parse_dictionary(data)
    data = shipped()
    data["objects"]["region_daily"]["retention"] = "P1Y"
    with pytest.raises(SchemaError, match="derived"):
        parse_dictionary(data)


def test_region_and_subject_columns_must_exist():
    data = shipped()
    data["objects"]["meter_readings"]["subject_meter_id"] = ["meter"]
    with pytest.raises(SchemaError, match=r"\['meter'\]"):
        parse_dictionary(data)
    data = shipped()
    data["objects"]["meter_readings"]["region"] = "meter_id -> meters.serial"
    with pytest.raises(SchemaError, match=r"meters\.serial"):
        parse_dictionary(data)


def test_every_personal_object_can_be_found_by_subject_or_says_why_not():
    """Every pseudonymized-personal object names the columns that find a meter's rows.

    Subject requests derive their lookups from here; the one exception keeps values raw, as
    JSON (refused_values: the pseudonym is in ``raw->>'meter'``).
    """
    unreachable = {
        name
        for name, entry in load_dictionary().objects.items()
        if entry.personal_data == "pseudonymized-personal"
        and not (entry.subject_meter_id or entry.subject_pseudonym)
    }
    assert unreachable == {"refused_values"}
