"""Receive transformer telemetry over MQTT (aiomqtt), acknowledging only what is stored.

The agent subscribes with a persistent session (fixed client id, ``clean_session`` off) at QoS 1
and turns on manual acknowledgement: a message is acknowledged (PUBACK) only after ``handle``
returns, that is after the buffer committed it. A crash before that leaves the message with the
broker, which sends it again on reconnect: at-least-once, duplicates dropped by ``seq``. The
broker's in-flight limit for unacknowledged messages is the backpressure.

aiomqtt 2.x acknowledges on receipt and exposes no switch for it; the paho client underneath
does (``manual_ack_set``/``ack``), reached in ``_paho`` below, the one place that knows.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import aiomqtt
import paho.mqtt.client as paho

from edge_agent.backoff import full_jitter
from edge_agent.config import MqttConfig

log = logging.getLogger(__name__)

RECONNECT_FIRST_SECONDS = 1.0
# The broker is the substation's own, with this agent its one subscriber: no herd of clients to
# spread out (unlike the core's uplink). A short cap keeps the window short in which a broker
# restarted without persistence drops what is published before the agent subscribes again.
RECONNECT_CAP_SECONDS = 5.0

Handler = Callable[[str, str, bytes], Awaitable[None]]  # (topic, transformer id, payload)


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client aiomqtt wraps (private in aiomqtt 2.x; checked by the MQTT tests)."""
    return client._client  # noqa: SLF001


class MqttSource:
    """The agent's subscription to its transformers' topics."""

    def __init__(self, config: MqttConfig, *, rng: random.Random | None = None) -> None:
        """Args: config: broker and topic mapping; rng: jitter for reconnects (tests seed it)."""
        self.config = config
        self.received = 0
        self.connected = False
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    async def run(self, handle: Handler) -> None:
        """Receive until cancelled; reconnect with capped, jittered backoff when the link fails."""
        attempt = 0
        while True:
            received_before = self.received
            try:
                await self._session(handle)
            except aiomqtt.MqttError as exc:
                self.connected = False
                if self.received > received_before:
                    attempt = 0  # the link worked for a while: start the backoff afresh
                delay = full_jitter(
                    attempt, first=RECONNECT_FIRST_SECONDS, cap=RECONNECT_CAP_SECONDS, rng=self._rng
                )
                attempt += 1
                log.warning(
                    "MQTT broker %s:%d unavailable (%s); retrying in %.1f s",
                    self.config.host,
                    self.config.port,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _session(self, handle: Handler) -> None:
        client = aiomqtt.Client(
            self.config.host,
            port=self.config.port,
            identifier=self.config.client_id,
            clean_session=False,
        )
        # Before CONNECT: the broker sends what it queued for this session right after
        # CONNACK, and anything arriving before the switch would be acknowledged unstored.
        _paho(client).manual_ack_set(on=True)
        async with client:
            await client.subscribe([(topic, self.config.qos) for topic in self.config.topics])
            self.connected = True
            log.info(
                "subscribed to %d transformer topics on %s:%d",
                len(self.config.topics),
                self.config.host,
                self.config.port,
            )
            async for message in client.messages:
                topic = str(message.topic)
                payload = (
                    message.payload
                    if isinstance(message.payload, bytes)
                    else str(message.payload).encode()
                )
                await handle(topic, self.config.topics.get(topic, ""), payload)
                self.received += 1
                if message.qos > 0:
                    _paho(client).ack(message.mid, message.qos)
