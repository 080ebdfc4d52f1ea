"""Data-subject requests, from the gateway that holds the key to the database, across a rotation.

The simulator serves meters, the agent stores their readings through a real core under one
key, rotates to another, stores more; then the household's serial goes through the real
commands: `edge-agent subject token` on the gateway, `governance subject access|erase`
centrally, `edge-agent subject erase` for the buffer. Every count is checked against the
database itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fix_services import governance, stop_process, stored_readings, wait_until
from pgcluster import OWNER_LOGIN, as_login

from core_ingest.schema import NATIVE
from edge_agent.keys import generate_pseudonym_key, load_signing_key
from edge_agent.sinks.buffer import Buffer, SubjectPendingError
from proto import pb, seal_batch
from proto.subject_token import SUBJECT_TOKEN, sign

pytestmark = pytest.mark.integration
METERS = 6


def rotate(agent) -> None:
    """`edge-agent rotate-pseudonym-key`, then the configuration switched to the new key."""
    generate_pseudonym_key(agent.folder / "pseudonym-2.key")
    rotated = agent.command(
        "rotate-pseudonym-key", "--new-key-file", str(agent.folder / "pseudonym-2.key"),
        "--new-key-id", "test-key-2",
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    config = agent.config_path.read_text()
    agent.config_path.write_text(
        config.replace('key_file = "pseudonym.key"', 'key_file = "pseudonym-2.key"').replace(
            'key_id = "test-key-1"', 'key_id = "test-key-2"'
        )
    )


def counts(dsn: str, meter_ids: list[int]) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM meter_readings WHERE meter_id = ANY(%s)),"
            " (SELECT count(*) FROM meters WHERE meter_id = ANY(%s))",
            (meter_ids, meter_ids),
        ).fetchone()


def rollups_agree(dsn: str) -> bool:
    """The daily rollup still sums exactly the customer readings stored."""
    with psycopg.connect(dsn) as conn:
        rolled, stored = conn.execute(
            "SELECT (SELECT coalesce(sum(energy_wh), 0) FROM substation_daily),"
            " (SELECT coalesce(sum(r.energy_wh), 0) FROM meter_readings r JOIN meters m"
            "  USING (meter_id) WHERE m.role = 'customer')"
        ).fetchone()
    return rolled == stored


@pytest.mark.parametrize("storage", [NATIVE])
def test_access_and_erasure_across_a_key_rotation(
    simulator, core_server, agent_setup, storage_dsn, tmp_path: Path
):
    sim = simulator(meters=METERS)
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    for expected in (METERS, 2 * METERS):
        process = agent.run()
        try:
            sim.close_interval()
            wait_until(
                lambda e=expected: stored_readings(storage_dsn) >= e, timeout=30, what="readings"
            )
            wait_until(
                lambda: json.loads(agent.command("status").stdout)["pending_batches"] == 0,
                timeout=30,
                what="the buffer to drain",
            )
        finally:
            stop_process(process)
        if expected == METERS:
            rotate(agent)
    serial = sim.served()[0].serial
    token_file, token = make_token(agent, serial, "access", tmp_path)
    assert str(serial) not in token_file.read_text()  # the serial never leaves the gateway
    assert (token["key_id"], token["reference"]) == ("test-key-2", "DSR-1")
    owner = as_login(storage_dsn, OWNER_LOGIN)
    meter_ids = _access(owner, storage_dsn, token_file, token, tmp_path / "access")
    again = governance("subject", "access", "--token", str(token_file), "--out",
                       str(tmp_path / "again"), dsn=owner)  # fmt: skip
    assert "the token was used already (audit entry" in again.stderr
    wrong = governance("subject", "erase", "--token", str(token_file), dsn=owner)
    assert "the token allows 'access', not 'erase'" in wrong.stderr
    receipt = _erase_at_the_edge(agent, serial, tmp_path / "receipt.json")
    erase_file, _ = make_token(agent, serial, "erase", tmp_path)
    _erase_centrally(owner, storage_dsn, erase_file, receipt, meter_ids)
    with psycopg.connect(storage_dsn) as conn:
        trail = json.dumps(conn.execute("SELECT json_agg(detail) FROM audit_log").fetchone()[0])
    assert token["pseudonym"] not in trail  # the trail is kept forever: digests only


def make_token(agent, serial: int, action: str, folder: Path) -> tuple[Path, dict]:
    """`edge-agent subject token` for one action; its file and fields."""
    made = agent.command("subject", "token", "--serial", str(serial), "--action", action,
                         "--reference", "DSR-1")  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = folder / f"token-{action}.json"
    path.write_text(made.stdout)
    return path, json.loads(made.stdout)


def _access(owner: str, storage_dsn: str, token_file: Path, token: dict, out: Path) -> list[int]:
    """Everything held is written, under both pseudonyms; the meter's ids."""
    accessed = governance("subject", "access", "--token", str(token_file), "--out", str(out),
                          "--json", dsn=owner)  # fmt: skip
    assert accessed.returncode == 0, accessed.stderr
    summary = json.loads(accessed.stdout)
    held = json.loads((out / "subject.json").read_text())
    meter_ids = held["meter"]["meter_ids"]
    assert len(meter_ids) == 2  # one per key: joined through pseudonym_map
    assert summary["readings"] == 2 == counts(storage_dsn, meter_ids)[0]
    lines = (out / "readings.csv").read_text().splitlines()
    assert len(lines) == 3
    assert lines[1].split(",")[6] == "read"
    assert set(held["meter"]["pseudonyms"]) >= {token["pseudonym"]}
    assert len(held["rotations"]) == 1

    return meter_ids


def _erase_at_the_edge(agent, serial: int, receipt_file: Path) -> dict:
    """The buffer forgets the meter, acknowledged batches included; the signed receipt."""
    show = json.loads(agent.command("subject", "show", "--serial", str(serial)).stdout)
    assert show["pending_batches"] == []
    assert show["acknowledged_batches"]  # kept for re-sending: they carry its readings
    receipt = agent.command("subject", "erase", "--serial", str(serial), "--reference", "DSR-1")
    assert receipt.returncode == 0, receipt.stderr
    receipt_file.write_text(receipt.stdout)
    edge = json.loads(receipt.stdout)
    assert edge["after"]["acknowledged_batches"] == []
    assert edge["after"]["validation_state"] == 0
    assert edge["before"]["validation_state"] == 1

    return edge


def _erase_centrally(
    owner: str, storage_dsn: str, token_file: Path, edge: dict, meter_ids: list[int]
) -> None:
    """Every row about the meter goes, the rollups follow, the evidence is audited."""
    before = counts(storage_dsn, meter_ids)
    erased = governance("subject", "erase", "--token", str(token_file), "--edge-receipt",
                        str(token_file.parent / "receipt.json"), "--json", dsn=owner)  # fmt: skip
    assert erased.returncode == 0, erased.stderr
    evidence = json.loads(erased.stdout)
    assert evidence["before"]["meter_readings"] == before[0] == 2
    assert evidence["before"]["meters"] == before[1] == 2
    assert evidence["before"]["pseudonym_map"] == 1
    assert set(evidence["after"].values()) == {0}
    assert counts(storage_dsn, meter_ids) == (0, 0)
    assert stored_readings(storage_dsn) == 2 * METERS - 2  # the others untouched
    assert evidence["rollup_rows_corrected"] > 0
    assert rollups_agree(storage_dsn)
    with psycopg.connect(storage_dsn) as conn:
        ((detail,),) = conn.execute(
            "SELECT detail FROM audit_log WHERE action = 'subject.erase'"
        ).fetchall()
    assert detail["sha256"] == evidence["sha256"]
    assert detail["edge_receipt"]["sha256"] == edge["sha256"]
    assert detail["before"]["meter_readings"] == 2


@pytest.mark.parametrize("storage", [NATIVE])
def test_a_changed_foreign_expired_or_borrowed_token_is_refused(storage_dsn, agent_setup, tmp_path):
    agent = agent_setup(core="127.0.0.1:9", modbus_port=9)
    other = agent_setup(core="127.0.0.1:9", modbus_port=9, agent_id="substation-test-2")
    _file, made = make_token(agent, 42, "erase", tmp_path)
    with psycopg.connect(storage_dsn, autocommit=True) as conn:  # agent 1's meter, stored
        conn.execute(
            "INSERT INTO meters (pseudonym, substation, region, first_agent_id, key_id)"
            " VALUES (%s, 'S', 'unassigned', %s, 'test-key-1')",
            (bytes.fromhex(made["pseudonym"]), agent.agent_id),
        )
    fields = {k: v for k, v in made.items() if k not in ("kind", "signature")}
    past = fields | {"expires_at": "2026-01-01T00:00:00+00:00"}
    own_key = load_signing_key(agent.folder / "agent.key")
    borrowed = fields | {"agent_id": other.agent_id}
    owner = as_login(storage_dsn, OWNER_LOGIN)
    for name, document, says in (
        ("changed", made | {"pseudonym": "00" * 32}, "does not verify with the agent's"),
        ("foreign", made | {"agent_id": "nobody"}, "no enrolled agent 'nobody'"),
        ("not-json", None, "not JSON"),
        ("expired", sign(SUBJECT_TOKEN, past, own_key), "the token expired at 2026-01-01"),
        ("borrowed", sign(SUBJECT_TOKEN, borrowed, load_signing_key(other.folder / "agent.key")),
         "the meter was first sent by 'substation-test-1'"),
        ("not-hex", made | {"pseudonym": "zz"}, "not 64 hexadecimal digits"),
    ):  # fmt: skip
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document) if document else "{ not json")
        done = governance("subject", "erase", "--token", str(path), dsn=owner)
        assert done.returncode == 1, name
        assert "cannot use the token: " in done.stderr, done.stderr
        assert says in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr
    with psycopg.connect(storage_dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM audit_log WHERE action LIKE 'subject.%'"
        ).fetchone() == (0,)


def test_a_meter_in_a_pending_batch_is_not_erased_at_the_edge(tmp_path):
    """A pending batch is signed and owed to the core: erasure waits for its delivery."""
    buffer = Buffer(tmp_path / "buffer.sqlite")
    meter = bytes(range(32))
    body = pb.BatchPayload(devices=["d"])
    body.meter_readings.meters.append(meter)
    signed = seal_batch(
        body, agent_id="a", sequence=1, created_ms=0, pseudonym_key_id="k", software_version="t",
        register_map_version=1, private_key=Ed25519PrivateKey.generate(),
        validation_ruleset="vee-1",
    ).SerializeToString()  # fmt: skip
    buffer._db.execute(
        "INSERT INTO batches (sequence, created_ms, readings, signed, state)"
        " VALUES (1, 0, 1, ?, 'pending')",
        (signed,),
    )
    with pytest.raises(SubjectPendingError, match=r"pending batches \[1\] carry this meter"):
        buffer.erase_subject(meter)
    buffer._db.execute("UPDATE batches SET state = 'acknowledged'")
    before, after, _digest = buffer.erase_subject(meter)
    assert (before.acknowledged_batches, after.acknowledged_batches) == ([1], [])
    buffer.close()
