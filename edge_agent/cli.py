"""``edge-agent``: the gateway daemon and the field technician's commands (a thin layer).

Every command prints JSON; library errors become one-line messages. Exit codes: 0 success,
1 handled error, 2 usage error, 78 invalid configuration (as ``vector validate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import gc
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import click

from edge_agent import subject as subject_requests
from edge_agent.agent import EdgeAgent, check_environment
from edge_agent.config import AgentConfig, load_config
from edge_agent.doctor import diagnose
from edge_agent.dry_run import one_cycle
from edge_agent.errors import BufferDamaged, ConfigError, EdgeError
from edge_agent.follow import Follower
from edge_agent.keys import generate_pseudonym_key, generate_signing_key, load_signing_key
from edge_agent.probe import probe_modbus, probe_mqtt, source_for
from edge_agent.rotation import rotate_pseudonym_key
from edge_agent.sinks.buffer import Buffer
from edge_agent.sinks.uplink import ack_label
from proto.diagnosis import iso
from proto.observability import LogFormat, configure_logging, log_options

EXIT_CONFIG = 78
TAIL_SECONDS = 0.5  # how often `tail` looks for newly sealed batches


def _print(data: Any) -> None:  # noqa: ANN401 - any JSON-serializable value
    click.echo(json.dumps(data, indent=2, default=str))


def config_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--config`` option every gateway command takes."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="EDGE_AGENT_CONFIG",
        default=Path("edge-agent.toml"),
        show_default=True,
        help="Agent configuration file (TOML). Env: EDGE_AGENT_CONFIG.",
    )(command)


def _load(config_path: Path) -> AgentConfig:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        click.echo(f"Error: invalid configuration: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


@contextlib.contextmanager
def _read_only_buffer(config: AgentConfig) -> Iterator[Buffer]:
    """The buffer opened for reading only; its errors become one-line messages."""
    try:
        buffer = Buffer(config.buffer.path, read_only=True)
    except EdgeError as exc:
        raise click.ClickException(f"{exc} (has the agent run yet?)") from None
    try:
        yield buffer
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        buffer.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@log_options("EDGE_AGENT_LOG_FORMAT")
def main(*, verbose: bool, log_format: LogFormat) -> None:
    """Substation gateway agent: reads concentrators, buffers and uploads signed batches."""
    configure_logging("edge-agent", verbose=verbose, log_format=log_format)


@main.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Private key file to create (mode 0600); the public key goes to OUT.pub.",
)
def keygen(out: Path) -> None:
    """Create the agent's Ed25519 signing key pair.

    Enroll the public key at the core with `core-ingest agents add`.

    Example: edge-agent keygen --out /etc/edge-agent/agent.key
    """
    try:
        public_pem = generate_signing_key(out)
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from None
    public_path = out.with_name(out.name + ".pub")
    public_path.write_bytes(public_pem)
    _print({"private_key": str(out), "public_key": str(public_path)})


@main.command("pseudonym-keygen")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Key file to create (mode 0600). It never leaves the gateway.",
)
def pseudonym_keygen(out: Path) -> None:
    """Create a pseudonymization (HMAC-SHA-256) key for meter serials.

    Example: edge-agent pseudonym-keygen --out /etc/edge-agent/pseudonym.key
    """
    try:
        generate_pseudonym_key(out)
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from None
    _print({"pseudonym_key": str(out)})


@main.command("rotate-pseudonym-key")
@config_option
@click.option(
    "--new-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The new key, from `edge-agent pseudonym-keygen` (mode 0600).",
)
@click.option("--new-key-id", required=True, help="The new key's public name.")
def rotate_pseudonym_key_command(config_path: Path, new_key_file: Path, new_key_id: str) -> None:
    """Switch to a new pseudonymization key, keeping every meter's central history joined.

    Stop the agent first. Reads every concentrator once, re-keys the buffer, and queues the
    signed old -> new mapping for the core. Then set pseudonymization.key_file and key_id to
    the new key and start the agent (it refuses to start under the old key id).

    Example: edge-agent rotate-pseudonym-key --new-key-file p2.key --new-key-id north-2027-01
    """
    config = _load(config_path)
    try:
        mapped = rotate_pseudonym_key(config, new_key_file=new_key_file, new_key_id=new_key_id)
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from None
    _print(
        {
            "meters_mapped": mapped,
            "old_key_id": config.pseudonymization.key_id,
            "new_key_id": new_key_id,
            "next": "set pseudonymization.key_file and key_id to the new key, then start the agent",
        }
    )


@main.group()
def subject() -> None:
    """A data subject's request: the meter's signed token, what the buffer holds, erasure."""


serial_option = click.option(
    "--serial",
    type=click.IntRange(min=0),
    required=True,
    help="The meter's serial, as on its nameplate (used in memory only).",
)
reference_option = click.option(
    "--reference", default="", help="The request's case number, carried in what is signed."
)


@subject.command("token")
@config_option
@serial_option
@click.option(
    "--action",
    type=click.Choice(["access", "erase"]),
    required=True,
    help="What the token allows: `governance subject access` or `subject erase`, once.",
)
@reference_option
@click.option(
    "--valid-days", type=click.IntRange(1, 90), default=30, show_default=True, help="Expiry."
)
def subject_token_command(
    config_path: Path, serial: int, action: str, reference: str, valid_days: int
) -> None:
    """Print the meter's pseudonym, signed by this agent, for one `governance subject` request.

    Example: edge-agent subject token --serial 40012345 --action access --reference DSR-42 > t.json
    """
    with _edge_errors():
        made = subject_requests.token(
            _load(config_path), serial, action=action, reference=reference, valid_days=valid_days
        )
        _print(made)


@subject.command("show")
@config_option
@serial_option
def subject_show(config_path: Path, serial: int) -> None:
    """What the buffer holds about the meter: readings, state, quarantine, batches.

    Example: edge-agent subject show --serial 40012345
    """
    with _edge_errors(hint=" (has the agent run yet?)"):
        _print(subject_requests.holdings(_load(config_path), serial))


@subject.command("erase")
@config_option
@serial_option
@reference_option
def subject_erase(config_path: Path, serial: int, reference: str) -> None:
    """Erase the meter from the buffer; print a receipt signed by this agent.

    Stop the agent first (it keeps the meter's validation state in memory). Refused while a
    pending batch carries the meter: let the agent deliver it, then erase here and centrally.

    Example: edge-agent subject erase --serial 40012345 --reference DSR-2026-0042 > receipt.json
    """
    with _edge_errors():
        _print(subject_requests.erase(_load(config_path), serial, reference))


@contextlib.contextmanager
def _edge_errors(hint: str = "") -> Iterator[None]:
    """The library's errors as one-line messages."""
    try:
        yield
    except EdgeError as exc:
        raise click.ClickException(f"{exc}{hint}") from None


@main.command("check-config")
@config_option
def check_config(config_path: Path) -> None:
    """Validate the configuration, the key files it names and the buffer; exit 78 if invalid.

    A damaged buffer exits 1: `edge-agent run` salvages it.

    Example: edge-agent check-config --config /etc/edge-agent/edge-agent.toml
    """
    config = _load(config_path)
    try:
        check_environment(config)
    except BufferDamaged as exc:  # not the configuration's fault
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except EdgeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    _print({"valid": True, "agent_id": config.agent.id, "sources": len(config.sources.modbus)})


@main.command()
@config_option
def run(config_path: Path) -> None:
    """Run the agent until interrupted (SIGINT/SIGTERM); nothing buffered is lost on stop.

    Example: edge-agent run --config /etc/edge-agent/edge-agent.toml
    """
    config = _load(config_path)

    async def serve() -> None:
        # SIGTERM (what systemd sends to stop a service) ends the agent like SIGINT: its
        # tasks are cancelled and it closes in order, saving what validation learned.
        task = asyncio.current_task()
        if task is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        async with EdgeAgent(config) as agent:
            # What exists now (the imported libraries, validation's restored memory) lives as
            # long as the process: frozen out of the cyclic collector, its full collections
            # stop walking it again and again (a fifth of the pipeline's time otherwise).
            gc.collect()
            gc.freeze()
            await agent.run()

    faulthandler.enable()  # a crash in a C extension still leaves a stack in the log
    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(serve())
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(config_path: Path, *, as_json: bool) -> None:
    """Say what is wrong at this gateway and what to do; exit 1 if anything needs action.

    Devices, broker, buffer, uplink, clocks, keys and certificates, on one screen. Reads the
    running agent's own figures; with the agent stopped, probes devices, broker and core itself.

    Example: edge-agent doctor --config /etc/edge-agent/edge-agent.toml
    """
    config = _load(config_path)
    diagnosis = asyncio.run(diagnose(config))
    if as_json:
        _print(diagnosis.as_json())
    else:
        click.echo(diagnosis.screen())
    sys.exit(1 if diagnosis.needs_action else 0)


@main.group()
def probe() -> None:
    """Ask one concentrator or the broker directly, as a technician on site would."""


def _host_port(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":") if ":" in value else (value, "", str(default_port))
    try:
        return host, int(port)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HOST or HOST:PORT") from None


@probe.command("modbus")
@click.argument("address", metavar="HOST[:PORT]")
@click.option(
    "--unit", type=click.IntRange(1, 247), default=1, show_default=True, help="Modbus unit id."
)
@click.option(
    "--address", "register", type=click.IntRange(0, 65_535), help="First holding register."
)
@click.option("--count", type=click.IntRange(1, 2_000), help="Registers to read.")
@click.option(
    "--word-order",
    type=click.Choice(["high_first", "low_first"]),
    default="high_first",
    show_default=True,
    help="As [[sources.modbus]] word_order.",
)
@click.option(
    "--byte-order",
    type=click.Choice(["big", "little"]),
    default="big",
    show_default=True,
    help="As [[sources.modbus]] byte_order.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60),
    default=3.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
def probe_modbus_command(  # noqa: PLR0913, PLR0917 - one parameter per option
    address: str,
    unit: int,
    register: int | None,
    count: int | None,
    word_order: Literal["high_first", "low_first"],
    byte_order: Literal["big", "little"],
    timeout: float,
) -> None:
    """Read a concentrator's header, clock and first records, decoded with the register map.

    By default the first three meter records; --address and --count read other registers
    (decoded when they are whole records, raw otherwise). Serials show their last 4 digits.
    Exit 1 when the device does not answer as the register map says.

    Example: edge-agent probe modbus 10.20.0.11:502 --unit 1
    """
    host, port = _host_port(address, 502)
    source = source_for(
        host, port, unit, timeout_seconds=timeout, word_order=word_order, byte_order=byte_order
    )
    try:
        result = asyncio.run(probe_modbus(source, address=register, count=count))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _print(result.as_json())
    sys.exit(0 if result.ok else 1)


@probe.command("mqtt")
@config_option
@click.option(
    "--seconds",
    type=click.FloatRange(0.5, 3_600),
    default=10.0,
    show_default=True,
    help="How long to listen.",
)
def probe_mqtt_command(config_path: Path, seconds: float) -> None:
    """Listen on the configured transformer topics and show what arrives, checked.

    Uses a throwaway session: the agent's own session and its queued messages are left
    alone. Each message is decoded as the agent would (ok, or why it would be quarantined).

    Example: edge-agent probe mqtt --seconds 30
    """
    config = _load(config_path)
    if config.mqtt is None:
        raise click.ClickException("no [mqtt] section in the configuration")
    mqtt = config.mqtt
    result = asyncio.run(probe_mqtt(mqtt.host, mqtt.port, mqtt.topics, listen_seconds=seconds))
    _print(dataclasses.asdict(result))
    sys.exit(0 if result.connected else 1)


@main.command()
@config_option
def once(config_path: Path) -> None:
    """Poll every device once, validate, and show what would be sealed; send nothing.

    The buffer is only read (no cursor moves): stop the agent first, or it may lose a poll.

    Example: edge-agent once --config /etc/edge-agent/edge-agent.toml
    """
    with _edge_errors():
        _print(asyncio.run(one_cycle(_load(config_path))))


@main.command()
@config_option
@click.option(
    "--from-sequence",
    type=click.IntRange(min=1),
    help="Start with this batch (still retained) instead of the next one sealed.",
)
def tail(config_path: Path, from_sequence: int | None) -> None:
    """Follow every reading and telemetry value as it is sealed, with its flags; Ctrl-C stops.

    One line per value: sealed at, batch, device, meter (pseudonym prefix), interval, energy,
    register, flags (`read` when none); quarantined items as they arrive.

    Example: edge-agent tail --config /etc/edge-agent/edge-agent.toml
    """
    config = _load(config_path)
    with _edge_errors():
        public_key = load_signing_key(config.agent.signing_key_file).public_key()
    with _read_only_buffer(config) as buffer:
        newest = buffer.quarantined(limit=1)
        follower = Follower(
            buffer,
            public_key,
            {source.device: source.name for source in config.sources.modbus},
            after_sequence=(from_sequence or buffer.statistics().next_sequence) - 1,
            after_quarantine=newest[0]["id"] if newest else 0,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                for line in follower.lines():
                    click.echo(line)
                time.sleep(TAIL_SECONDS)


@main.command()
@config_option
def status(config_path: Path) -> None:
    """Show what the buffer holds: pending readings and batches, refusals, next sequence.

    Example: edge-agent status --config /etc/edge-agent/edge-agent.toml
    """
    config = _load(config_path)
    with _read_only_buffer(config) as buffer:
        shown = dataclasses.asdict(buffer.statistics())
    oldest = shown.pop("oldest_pending_poll_ms")
    shown["oldest_pending_poll"] = iso(oldest) if oldest else None  # readable, not epoch ms
    _print({"agent_id": config.agent.id, **shown})


@main.command()
@config_option
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=20,
    show_default=True,
    help="How many of the most recent items to show.",
)
def quarantine(config_path: Path, limit: int) -> None:
    """Show the most recent quarantined readings and messages, with the reason for each.

    Example: edge-agent quarantine --config edge-agent.toml --limit 5
    """
    config = _load(config_path)
    with _read_only_buffer(config) as buffer:
        items = buffer.quarantined(limit=limit)
    for item in items:
        payload = bytes(item["payload"])
        item["payload"] = payload.decode("utf-8", errors="replace")
        item["received"] = iso(item.pop("received_ms"))
    _print(items)


@main.command()
@config_option
@click.option(
    "--from-sequence",
    type=click.IntRange(min=1),
    required=True,
    help="Re-send every retained batch with this sequence number or later.",
)
def resend(config_path: Path, from_sequence: int) -> None:
    """Send retained batches to the core again, e.g. after a central restore from backup.

    The core stores what it lacks and answers DUPLICATE for what it has, so this is safe.

    Example: edge-agent resend --config edge-agent.toml --from-sequence 1
    """
    config = _load(config_path)

    async def deliver() -> list[str]:
        async with EdgeAgent(config) as agent:
            batches = await agent.buffer_call(
                agent.buffer.retained_batches, from_sequence=from_sequence
            )
            acks = await agent.uplink.deliver(batches)
            return [ack_label(ack) for ack in acks]

    try:
        labels = asyncio.run(deliver())
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from None
    _print({"sent": len(labels), "answers": {label: labels.count(label) for label in set(labels)}})
