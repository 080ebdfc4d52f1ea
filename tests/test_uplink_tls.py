"""Mutual TLS between agents and a real core on loopback: who may connect, who may send what."""

from __future__ import annotations

import dataclasses

import grpc
import psycopg
import pytest
from fix_services import make_pki, stop_process, stored_readings, wait_until
from uplink_harness import enroll, fill_signed, run_uplink_against

from core_ingest.schema import NATIVE
from edge_agent.sinks.buffer import Buffer
from proto import pb, pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [NATIVE])]


@pytest.fixture
def send_signed(tmp_path, tls_core_server, storage_dsn):
    """``send_signed(agent_id, tls, done)``: enroll, seal 2 batches, run an uplink until done."""

    def send(agent_id: str, tls, done):
        buffer = Buffer(tmp_path / "b.sqlite")
        key = enroll(storage_dsn, agent_id)
        readings = fill_signed(buffer, agent_id=agent_id, key=key, batches=2)
        return run_uplink_against(tls_core_server, buffer, done, tls=tls), buffer, readings

    return send


def test_an_agent_with_a_certificate_for_its_own_id_is_stored(send_signed, storage_dsn, pki):
    """Certificate and batches name the same agent: every batch is accepted and stored."""
    uplink, buffer, readings = send_signed(
        "sub-tls", pki.client_tls("sub-tls"), lambda up: up.acks["accepted"] == 2
    )
    assert dict(uplink.acks) == {"accepted": 2}
    assert buffer.statistics().pending_batches == 0
    assert stored_readings(storage_dsn) == readings
    buffer.close()


@pytest.mark.parametrize("client", ["plaintext", "certificate from another authority"])
def test_an_agent_without_a_trusted_client_certificate_cannot_connect(
    send_signed, tmp_path, storage_dsn, pki, client
):
    """No handshake, no stream: the batches stay pending, nothing is stored, it keeps trying."""
    tls = None
    if client != "plaintext":
        stranger = make_pki(tmp_path / "other-ca").client_tls("sub-tls")
        tls = dataclasses.replace(stranger, authority=pki.ca.read_bytes())  # trusts the core
    uplink, buffer, _ = send_signed("sub-tls", tls, lambda up: up.sessions >= 3)
    assert not uplink.acks
    assert buffer.statistics().pending_batches == 2
    assert stored_readings(storage_dsn) == 0
    buffer.close()


def test_the_core_refuses_a_handshake_without_a_client_certificate(tls_core_server, pki):
    """TLS that trusts the core but presents no certificate of its own does not get through."""
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    with (
        grpc.secure_channel(tls_core_server, credentials) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        pb_grpc.IngestStub(channel).Health(pb.HealthRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_for_another_agent_is_refused_and_the_batches_are_kept(
    send_signed, storage_dsn, pki
):
    """Batches signed by sub-a over sub-b's certificate: CERTIFICATE_MISMATCH, kept on disk."""
    uplink, buffer, _ = send_signed(
        "sub-a", pki.client_tls("sub-b"), lambda up: up.acks["rejected:CERTIFICATE_MISMATCH"] == 2
    )
    assert dict(uplink.acks) == {"rejected:CERTIFICATE_MISMATCH": 2}
    stats = buffer.statistics()
    assert (stats.rejected_batches, stats.pending_batches) == (2, 0)
    assert len(buffer.retained_batches(from_sequence=1)) == 2  # for `edge-agent resend`
    assert stored_readings(storage_dsn) == 0
    buffer.close()


def test_the_agent_delivers_over_mutual_tls_with_gzip_and_a_cap_as_configured(
    simulator, tls_core_server, agent_setup, storage_dsn, pki
):
    """`edge-agent run` with [uplink.tls], compression and a cap: every reading arrives."""
    sim = simulator(meters=200)
    cert, key = pki.agent("substation-test-1")
    agent = agent_setup(
        core=tls_core_server,
        modbus_port=sim.port,
        uplink='compression = "gzip"\nmax_bytes_per_second = 1000000',
        extra=(
            f'\n[uplink.tls]\nca = "{pki.ca}"\ncert = "{cert}"\nkey = "{key}"\n'
            'server_name = "localhost"\n'
        ),
    )
    checked = agent.command("check-config")
    assert checked.returncode == 0, checked.stderr
    process = agent.run()
    try:
        sim.close_interval()
        wait_until(lambda: stored_readings(storage_dsn) >= 200, timeout=60, what="the interval")
    finally:
        stop_process(process)
    with psycopg.connect(storage_dsn) as conn:
        agents = conn.execute("SELECT DISTINCT agent_id FROM batches").fetchall()
    assert agents == [("substation-test-1",)]
