"""The test harness's own services work: Mosquitto carries a QoS 1 message end to end."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

pytestmark = pytest.mark.integration


def test_mosquitto_carries_a_message(mosquitto, request):
    """Publish and receive one message through the broker the fixture started."""
    topic = f"test/{request.node.name}"

    async def roundtrip() -> bytes:
        async with aiomqtt.Client("127.0.0.1", port=mosquitto) as client:
            await client.subscribe(topic, qos=1)
            await client.publish(topic, b'{"ok": true}', qos=1)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    return message.payload
        return b""

    assert asyncio.run(roundtrip()) == b'{"ok": true}'
