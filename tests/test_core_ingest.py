"""The core over real gRPC and PostgreSQL: each refusal reason, duplicates, conflicts, outages."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import random
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fix_services import (
    BIN,
    core_healthy,
    core_processes,
    serving_core,
    stop_process,
    wait_until,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pgcluster import free_loopback_port
from signed_batches import AGENT, KEY, answer, payload, seal, send

from core_ingest import agents
from core_ingest.schema import TIMESCALEDB
from proto import limits, pb, pb_grpc, public_key_bytes, seal_batch
from proto.envelope import SIGNING_CONTEXT

pytestmark = pytest.mark.integration
one_storage = pytest.mark.parametrize("storage", [TIMESCALEDB])


@pytest.fixture
def enrolled(storage_dsn: str) -> str:
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, AGENT, public_key_bytes(KEY.public_key()))
    return storage_dsn


def counts(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM meter_readings),"
            " (SELECT count(*) FROM transformer_telemetry)"
        ).fetchone()


def test_batch_is_stored_once_and_its_resend_is_a_duplicate(core_server, enrolled):
    """Readings, telemetry and the ledger row commit together; a resend writes nothing.

    The resend comes on a new stream, as an agent's does after a lost ack. Two copies in one
    stream are written concurrently, so which copy is acknowledged first is arbitrary: exactly
    one of them is accepted.
    """
    batch = seal(payload(readings=4, telemetry=6))
    (first,) = send(core_server, batch)
    (again,) = send(core_server, batch)
    assert (answer(first), first.meter_readings) == ("ACK_STATUS_ACCEPTED", 4)
    assert answer(again) == "ACK_STATUS_DUPLICATE"
    twins = seal(payload(readings=4, interval=1), sequence=2)
    assert sorted(answer(ack) for ack in send(core_server, twins, twins)) == [
        "ACK_STATUS_ACCEPTED",
        "ACK_STATUS_DUPLICATE",
    ]
    assert counts(enrolled) == (2, 8, 6)


def test_telemetry_sent_again_in_another_batch_is_stored_once(core_server, enrolled):
    """Points stored before are skipped, the rest of the batch stored and accepted.

    As a message the broker delivered again comes back, after the agent was killed between
    its buffer commit and its acknowledgement, in a batch of its own with new readings.
    """
    (first,) = send(core_server, seal(payload(readings=2, telemetry=6), sequence=1))
    again = payload(readings=2, telemetry=8, interval=1)  # the same 6 points and 2 new ones
    (second,) = send(core_server, seal(again, sequence=2))
    assert [answer(first), answer(second)] == ["ACK_STATUS_ACCEPTED", "ACK_STATUS_ACCEPTED"]
    assert counts(enrolled) == (2, 4, 8)
    with psycopg.connect(enrolled) as conn:
        kept = conn.execute(
            "SELECT batch_sequence, count(*) FROM transformer_telemetry GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert kept == [(1, 6), (2, 2)]  # each point from the batch that brought it first


def test_known_sequence_with_other_content_is_a_conflict(core_server, enrolled):
    """Same (agent, sequence), different payload: refused, and the stored batch is untouched."""
    (first,) = send(core_server, seal(payload(energy=100)))
    (second,) = send(core_server, seal(payload(energy=999)))
    assert answer(first) == "ACK_STATUS_ACCEPTED"
    assert answer(second) == "REJECT_REASON_SEQUENCE_CONFLICT"
    with psycopg.connect(enrolled) as conn:
        assert conn.execute("SELECT DISTINCT energy_wh FROM meter_readings").fetchall() == [(100,)]


@one_storage
def test_unknown_agent_is_refused(core_server, enrolled):
    """A batch from an agent id with no enrolled key is refused, nothing stored."""
    (ack,) = send(core_server, seal(agent_id="stranger"))
    assert (answer(ack), ack.agent_id, ack.sequence) == (
        "REJECT_REASON_UNKNOWN_AGENT",
        "stranger",
        1,
    )
    assert counts(enrolled) == (0, 0, 0)


@one_storage
def test_revoked_agent_is_refused(core_server, enrolled):
    """After revocation the same, correctly signed batch is refused."""
    with psycopg.connect(enrolled, autocommit=True) as conn:
        agents.revoke(conn, AGENT)
    (ack,) = send(core_server, seal())
    assert answer(ack) == "REJECT_REASON_REVOKED_AGENT"
    assert counts(enrolled) == (0, 0, 0)


@one_storage
def test_a_re_enrolled_agents_old_key_is_refused_and_its_new_key_goes_on(core_server, enrolled):
    """A gateway given a new key: the retired key's batches refused, the new key's go on.

    The retired key's batch stores nothing; the new key's batches continue the sequence.
    The core knows the retired key from the first batch: the signature verifies, and the
    store finds the key changed (a core that never saw it answers BAD_SIGNATURE).
    """
    (first,) = send(core_server, seal(payload(interval=0)))
    new_key = Ed25519PrivateKey.generate()
    with psycopg.connect(enrolled, autocommit=True) as conn:
        agents.enroll(conn, AGENT, public_key_bytes(new_key.public_key()))
    retired, renewed = send(
        core_server,
        seal(payload(interval=1), sequence=2),
        seal(payload(interval=1), sequence=2, key=new_key),
    )
    assert [answer(a) for a in (first, retired, renewed)] == [
        "ACK_STATUS_ACCEPTED",
        "REJECT_REASON_REVOKED_AGENT",
        "ACK_STATUS_ACCEPTED",
    ]
    assert "given a new key" in retired.detail
    assert counts(enrolled) == (2, 8, 0)


@one_storage
def test_a_batch_under_another_agents_id_is_refused(core_server, enrolled):
    """An enrolled agent signing with its own key under another's id: refused, nothing stored."""
    other = Ed25519PrivateKey.generate()
    with psycopg.connect(enrolled, autocommit=True) as conn:
        agents.enroll(conn, "agent-next-door", public_key_bytes(other.public_key()))
    (ack,) = send(core_server, seal(agent_id=AGENT, key=other))
    assert (answer(ack), ack.agent_id) == ("REJECT_REASON_BAD_SIGNATURE", AGENT)
    assert counts(enrolled) == (0, 0, 0)
    (own,) = send(core_server, seal(agent_id="agent-next-door", key=other))
    assert answer(own) == "ACK_STATUS_ACCEPTED"


@one_storage
def test_tampered_and_forged_batches_are_refused_with_their_reasons(core_server, enrolled):
    """Forged signature, edited payload, unknown schema and garbage each get their own reason."""
    forged = seal(key=Ed25519PrivateKey.generate())
    edited = seal(sequence=2)
    body = pb.BatchPayload.FromString(edited.payload)
    body.meter_readings.energy_wh[0] = 1
    edited.payload = body.SerializeToString()
    future = seal(sequence=3)
    header = pb.BatchHeader.FromString(future.header)
    header.schema_version = 2
    future.header = header.SerializeToString()
    future.signature = KEY.sign(SIGNING_CONTEXT + future.header)
    garbage = pb.SignedBatch(header=b"\x08\xff", payload=b"", signature=b"")
    empty = seal(pb.BatchPayload(devices=["d"]), sequence=4)
    twice = payload()
    twice.rotations.add(
        old_key_id="k1",
        new_key_id="k2",
        old_meters=[bytes(32)] * 2,
        new_meters=[b"\x01" * 32, b"\x02" * 32],
    )
    answers = [
        (answer(a), a.detail)
        for a in send(core_server, forged, edited, future, garbage, empty, seal(twice, sequence=5))
    ]
    assert [a for a, _ in answers] == [
        "REJECT_REASON_BAD_SIGNATURE",
        "REJECT_REASON_HASH_MISMATCH",
        "REJECT_REASON_UNSUPPORTED_SCHEMA",
        "REJECT_REASON_MALFORMED",
        "REJECT_REASON_MALFORMED",
        "REJECT_REASON_MALFORMED",
    ]
    assert "no reading, telemetry or rotation" in answers[4][1]
    assert "maps one old pseudonym twice" in answers[5][1]
    assert counts(enrolled) == (0, 0, 0)


def test_values_out_of_bounds_are_refused_one_by_one_and_the_rest_stored(core_server, enrolled):
    """Each bad value is kept aside with its reason; the good ones, their rollups, are stored.

    A buggy or compromised agent cannot push absurd values into the rollups (an energy of
    2^53+1 Wh once summed 2 Wh short, two of 2^62 overflowed), and one bad value never costs
    the good ones beside it. Meters whose only reading was refused get no row in ``meters``.
    """
    body = payload(readings=8, energy=[100, 2**53 + 1, 2**62, 100, 100, 100, 100, 100])
    columns = body.meter_readings
    columns.register_wh[3] = 2**63  # all ones-like: not a reading
    columns.interval_end[4] = 5_680_281_600  # the year 2150
    columns.interval_end[5] = 1_000  # 1970
    columns.quality_flags[6] = 2**31  # a bit no flag uses
    values = body.transformer_telemetry
    values.transformers.extend(["T1", "T" * 1_000_000])
    values.metrics.append("top_oil_c")
    values.transformer_index.extend([0, 0, 0, 1])
    values.metric_index.extend([0, 0, 0, 0])
    values.time_ms.extend([1_790_000_000_000 + 60_000 * i for i in range(4)])
    values.value.extend([55.0, float("nan"), float("inf"), 56.0])
    values.quality_flags.extend([0] * 4)
    (ack,) = send(core_server, seal(body))
    assert answer(ack) == "ACK_STATUS_ACCEPTED"
    assert "9 values refused" in ack.detail
    with psycopg.connect(enrolled) as conn:
        stored = conn.execute(
            "SELECT m.pseudonym, r.energy_wh FROM meter_readings r JOIN meters m USING (meter_id)"
            " ORDER BY 1"
        ).fetchall()
        refused = conn.execute(
            "SELECT kind, position, reason FROM refused_values ORDER BY kind, position"
        ).fetchall()
        meters = conn.execute("SELECT count(*) FROM meters").fetchone()[0]
        rollup = conn.execute(
            "SELECT sum(energy_wh), sum(received) FROM substation_daily"
        ).fetchone()
        telemetry = conn.execute("SELECT value FROM transformer_telemetry").fetchall()
    assert [(bytes(p)[-1], e) for p, e in stored] == [(0, 100), (7, 100)]
    assert meters == 2
    assert rollup == (200, 2)
    assert telemetry == [(55.0,)]
    reasons = {(kind, position): reason for kind, position, reason in refused}
    assert (
        sorted(reasons)
        == [
            *(("meter_reading", i) for i in range(1, 7)),
            ("telemetry", 1),
            ("telemetry", 2),
            ("telemetry", 3),
        ][: len(reasons)]
    )
    assert "beyond the physical limit" in reasons["meter_reading", 1]
    assert "beyond the physical limit" in reasons["meter_reading", 2]
    assert "is not a reading" in reasons["meter_reading", 3]
    assert "interval end 5680281600 is outside" in reasons["meter_reading", 4]
    assert "interval end 1000 is outside" in reasons["meter_reading", 5]
    assert "undefined bits" in reasons["meter_reading", 6]
    assert "not a finite number" in reasons["telemetry", 1]
    assert "not a finite number" in reasons["telemetry", 2]
    assert "printable characters" in reasons["telemetry", 3]


def test_a_refused_batch_adds_no_meter(core_server, enrolled):
    """A batch answered SEQUENCE_CONFLICT leaves the meters dimension as it was."""
    (first,) = send(core_server, seal(payload(readings=2)))
    (conflict,) = send(core_server, seal(payload(meters=[50, 51, 52])))
    assert (answer(first), answer(conflict)) == (
        "ACK_STATUS_ACCEPTED",
        "REJECT_REASON_SEQUENCE_CONFLICT",
    )
    with psycopg.connect(enrolled) as conn:
        assert conn.execute("SELECT count(*) FROM meters").fetchone()[0] == 2


def test_database_down_is_answered_storage_unavailable(tmp_path):
    """With no database the core still answers: unhealthy, and every batch STORAGE_UNAVAILABLE."""
    target = f"127.0.0.1:{free_loopback_port()}"
    dead_dsn = f"postgresql://postgres@127.0.0.1:{free_loopback_port()}/none"
    process = subprocess.Popen(
        [str(BIN / "core-ingest"), "serve", "--dsn", dead_dsn, "--listen", target],
        stderr=(tmp_path / "core.log").open("w"),
    )
    try:

        def answers_health() -> bool:
            try:
                with grpc.insecure_channel(target) as channel:
                    pb_grpc.IngestStub(channel).Health(pb.HealthRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return True

        wait_until(answers_health, timeout=30, what="core to answer Health")
        assert not core_healthy(target)
        with grpc.insecure_channel(target) as channel:
            reply = pb_grpc.IngestStub(channel).Health(pb.HealthRequest(), timeout=5)
        (ack,) = send(target, seal())
        assert answer(ack) == "REJECT_REASON_STORAGE_UNAVAILABLE"
        assert ack.sequence == 1
        port = dead_dsn.rsplit(":", 1)[-1].split("/", 1)[0]
        for told in (reply.detail, ack.detail):  # to any client: nothing of the database's
            assert told == "database unavailable; see the core's log"
            assert port not in told
        assert port in (tmp_path / "core.log").read_text()  # the operator has it
    finally:
        stop_process(process)


@one_storage
def test_values_the_database_cannot_hold_are_refused_with_the_field_named(core_server, enrolled):
    """Out-of-range header values are MALFORMED, not a broken stream; a reading, by itself."""
    far_future = payload()
    far_future.meter_readings.interval_end[0] = 32_503_680_000  # year 3000
    nul_agent = seal(agent_id="agent\x00x")
    huge_sequence = seal(sequence=2**63)
    later = seal(payload(interval=1), sequence=5)
    answers = send(core_server, seal(far_future), nul_agent, huge_sequence, later)
    assert [answer(a) for a in answers] == [
        "ACK_STATUS_ACCEPTED",
        "REJECT_REASON_MALFORMED",
        "REJECT_REASON_MALFORMED",
        "ACK_STATUS_ACCEPTED",
    ]
    assert "1 values refused" in answers[0].detail
    assert "agent_id" in answers[1].detail
    assert "sequence" in answers[2].detail
    assert counts(enrolled) == (2, 3 + 4, 0)


@one_storage
def test_same_payload_with_another_header_is_a_conflict_not_a_duplicate(core_server, enrolled):
    """A batch re-signed with another key id under a known sequence is refused."""
    first = seal()
    other_header = seal_batch(
        payload(),
        agent_id=AGENT,
        sequence=1,
        created_ms=1_790_000_000_000,
        pseudonym_key_id="k2",
        software_version="test",
        register_map_version=1,
        private_key=KEY,
    )
    assert other_header.payload == first.payload
    assert [answer(send(core_server, batch)[0]) for batch in (first, other_header)] == [
        "ACK_STATUS_ACCEPTED",
        "REJECT_REASON_SEQUENCE_CONFLICT",
    ]
    with psycopg.connect(enrolled) as conn:
        assert conn.execute("SELECT pseudonym_key_id FROM batches").fetchall() == [("k1",)]


def test_two_core_processes_store_a_batch_sent_to_both_once(enrolled, tmp_path):
    """The same batches streamed to two cores at once: each stored once, in one ledger row."""
    batches = [seal(payload(readings=50, interval=s), sequence=s) for s in range(1, 21)]
    with (
        core_processes(enrolled, tmp_path, 2) as targets,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        results = list(pool.map(lambda t: send(t, *batches), targets))
    for sequence in range(20):
        pair = sorted(answer(results[core][sequence]) for core in range(2))
        assert pair == ["ACK_STATUS_ACCEPTED", "ACK_STATUS_DUPLICATE"], pair
    assert counts(enrolled) == (20, 20 * 50, 0)


def scrape(address: str) -> tuple[dict[str, float], str]:
    """The samples of a Prometheus endpoint by name and labels, and its content type."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
        kind = reply.headers["Content-Type"]
    samples = {}
    for line in text.splitlines():
        if line and line[0] != "#":
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples, kind


@one_storage
def test_metrics_endpoint_counts_batches_by_outcome_and_readings_stored(enrolled, tmp_path):
    """[metrics] listen: prometheus-client's exposition of the core's stages and latency."""
    address = f"127.0.0.1:{free_loopback_port()}"
    config = tmp_path / "core.toml"
    config.write_text(f'[metrics]\nlisten = "{address}"\n')
    with contextlib.contextmanager(serving_core)(
        enrolled, tmp_path / "core.log", "--config", str(config)
    ) as target:
        before, _ = scrape(address)
        forged = seal(key=Ed25519PrivateKey.generate(), sequence=2)
        send(target, seal(payload(readings=7)), forged)
        samples, kind = scrape(address)
        health = grpc_health_status(target)
    assert kind.startswith("text/plain; version=0.0.4")
    assert samples['meterpipe_core_batches_total{reason="",status="accepted"}'] == 1
    assert samples['meterpipe_core_batches_total{reason="BAD_SIGNATURE",status="rejected"}'] == 1
    assert samples["meterpipe_core_readings_stored_total"] == 7
    assert samples["meterpipe_core_quality_alerts_total"] == 0
    assert samples["meterpipe_core_pool_size"] >= 1
    accepted = 'meterpipe_core_commit_seconds_count{outcome="accepted"}'
    assert before.get(accepted, 0) == 0
    assert samples[accepted] == 1
    assert samples['meterpipe_core_commit_seconds_count{outcome="rejected"}'] == 1
    assert samples['meterpipe_core_commit_seconds_bucket{le="+Inf",outcome="accepted"}'] == 1
    assert health == "SERVING"


def grpc_health_status(target: str, service: str = "meterpipe.v1.Ingest") -> str:
    """The standard grpc.health.v1 answer for ``service``, as a load balancer asks it."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(50):  # the first database check runs as the server starts
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.2)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def cut_off_stream(target: str, batches: list[pb.SignedBatch], *, after: float, cancel: bool):
    """Stream ``batches`` and vanish ``after`` seconds in, as a killed agent does.

    The call is cancelled (RST_STREAM) or its channel just closed, mid-send or mid-answer.
    """

    def requests() -> Iterator[pb.SignedBatch]:
        yield from batches
        time.sleep(1)  # still sending when cut off

    def drain_acks() -> None:
        with contextlib.suppress(grpc.RpcError):  # the cut itself
            collections.deque(call, maxlen=0)

    channel = grpc.insecure_channel(target)
    call = pb_grpc.IngestStub(channel).StreamBatches(requests(), timeout=30)
    reader = threading.Thread(target=drain_acks, daemon=True)
    reader.start()
    time.sleep(after)
    if cancel:
        call.cancel()
    channel.close()
    reader.join(timeout=10)


@one_storage
def test_streams_cut_off_at_any_moment_never_take_the_core_down(core_server, enrolled, tmp_path):
    """100 streams cut off at random moments; the core serves on and stores what committed.

    grpcio segfaulted the whole core when a handler asked a call that was gone for its peer.
    A batch being written when its stream is cut off is written to the end: no statement is
    cancelled halfway, so no connection is left busy and discarded (each logged a warning).
    """
    rng = random.Random(1)
    for stream in range(100):
        batches = [
            seal(payload(readings=50, interval=10 * stream + i), sequence=10 * stream + i)
            for i in range(1, rng.randrange(2, 8))
        ]
        cut_off_stream(core_server, batches, after=rng.random() * 0.05, cancel=stream % 2 == 0)
    assert core_healthy(core_server)
    (ack,) = send(core_server, seal(payload(interval=2000), sequence=2000))
    assert answer(ack) == "ACK_STATUS_ACCEPTED"
    stored = counts(enrolled)
    assert stored[1] == 50 * (stored[0] - 1) + 4  # every committed batch whole, none twice
    assert "WARNING" not in (tmp_path / "core.log").read_text()


@one_storage
def test_an_oversized_batch_and_a_message_that_is_no_batch_are_refused_not_fatal(
    core_server, enrolled, tmp_path
):
    """Both answered MALFORMED with a reason; the stream goes on and the next batch is stored.

    gRPC's default 4 MiB limit used to end the whole stream with RESOURCE_EXHAUSTED, losing the
    answers of the other batches in flight; a message that is not a SignedBatch logged a
    traceback each time. The log names each kind of refusal once per host.
    """
    oversized = seal(payload(readings=80_000), sequence=1).SerializeToString()
    assert len(oversized) > limits.MAX_BATCH_BYTES
    good = seal(payload(readings=4, interval=1), sequence=2).SerializeToString()
    messages = [b"\xff\xff\xff\xff", oversized, b"\xff\xff\xff\xff", good]
    with grpc.insecure_channel(core_server) as channel:
        call = channel.stream_stream(
            "/meterpipe.v1.Ingest/StreamBatches",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.Ack.FromString,
        )
        acks = list(call(iter(messages), timeout=60))
    answers = sorted((answer(a), a.sequence, a.detail) for a in acks)
    assert [(a, s) for a, s, _ in answers] == [
        ("ACK_STATUS_ACCEPTED", 2),
        ("REJECT_REASON_MALFORMED", 0),
        ("REJECT_REASON_MALFORMED", 0),
        ("REJECT_REASON_MALFORMED", 0),
    ]
    details = {d for *_, d in answers}
    assert "the message is not a SignedBatch" in details
    assert f"over the limit of {limits.MAX_BATCH_BYTES}" in " ".join(details)
    assert counts(enrolled) == (1, 4, 0)
    log = (tmp_path / "core.log").read_text()
    assert "Traceback" not in log
    assert log.count("not a SignedBatch") == 1  # the second one from this host: debug level
