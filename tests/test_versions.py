"""Versions: the schema's, the data dictionary's, and what produced the stored batches."""

from __future__ import annotations

import json

import msgspec
import psycopg
import pytest
from fix_services import governance
from signed_batches import AGENT, KEY, payload, seal, send

from core_ingest import agents
from core_ingest.schema import MIGRATIONS, migrate
from core_ingest.schema.dictionary import Column, digest, load_dictionary, record_version
from proto import public_key_bytes

pytestmark = pytest.mark.integration


def test_versions_show_migrations_dictionary_and_the_producers_of_batches(storage_dsn, core_server):
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, AGENT, public_key_bytes(KEY.public_key()))
    send(core_server, seal(payload(), sequence=1), seal(payload(interval=1), sequence=2))
    send(core_server, seal(payload(interval=2), sequence=3, key_id="k2"))
    done = governance("versions", "--json", "--dsn", storage_dsn)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [s["name"] for s in found["schema"]] == [m.name for m in MIGRATIONS]
    current = digest(load_dictionary())
    assert [d["digest"] for d in found["dictionaries"]] == [current]
    assert found["release_dictionary"] == current
    producers = {p["pseudonym_key_id"]: p for p in found["producers"]}
    assert (producers["k1"]["batches"], producers["k2"]["batches"]) == (2, 1)
    assert producers["k1"]["software_version"] == "test"
    assert producers["k1"]["validation_ruleset"] == "vee-1"
    assert producers["k1"]["agents"] == 1
    text = governance("versions", "--dsn", storage_dsn).stdout
    assert f"{current[:12]}  release" in text
    assert "(this release's)" in text


def test_a_new_dictionary_is_recorded_once_and_diff_says_what_changed(storage_dsn):
    """A release with other descriptions: recorded at migrate, audited, and diffable."""
    old = load_dictionary()
    meters = old.objects["meters"]
    new = msgspec.structs.replace(
        old,
        objects={
            **{k: v for k, v in old.objects.items() if k != "quality_alerts"},
            "meters": msgspec.structs.replace(
                meters,
                steward="grid data office",
                columns={**meters.columns, "tariff": Column(description="Tariff code")},
            ),
        },
    )
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        assert record_version(conn, new, "9.9.9") == digest(new)
        assert record_version(conn, new, "9.9.9") is None  # recorded once
        migrate(conn)  # the release's dictionary again: nothing new
        versions = conn.execute("SELECT count(*) FROM dictionary_versions").fetchone()[0]
        audited = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'dictionary.version'"
        ).fetchone()[0]
    assert (versions, audited) == (2, 1)
    done = governance("catalog", "diff", digest(old)[:12], digest(new)[:10], "--dsn", storage_dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "- quality_alerts",
        "~ meters.steward: 'metering data steward' -> 'grid data office'",
        "+ meters.tariff",
    ]
    same = governance("catalog", "diff", digest(old)[:12], "current", "--dsn", storage_dsn)
    assert same.stdout.strip() == "no differences"
    unknown = governance("catalog", "diff", "abc123", "--dsn", storage_dsn)
    assert unknown.returncode == 1
    assert "'abc123' is not a recorded dictionary version" in unknown.stderr
    offline = governance("catalog", "diff", "abc123")
    assert "recorded versions are read from the database (--dsn)" in offline.stderr
